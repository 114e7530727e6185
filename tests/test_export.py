"""ONNX export checked against PyTorch in ONNX Runtime (CPU); TensorRT engine building where it
can run, and its clear refusal where it cannot."""

from __future__ import annotations

import argparse
import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from models import TINY_MODELS  # tests/models.py

from locp_trt.deploy.devices import get_device
from locp_trt.deploy.export import (
    Exporter,
    ExportError,
    build_trt_engine,
    export_onnx,
    onnx_bytes_from_module,
    onnx_float_to_half,
    verify_onnx,
)
from locp_trt.errors import BackendUnavailableError, InvalidConfigError, LocpError
from locp_trt.latency.config import Precision
from locp_trt.models import get_model, list_models, model_spec

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def tiny_conv() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))


def ort_run(data: bytes, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def torch_ref(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x.astype(np.float32))).numpy()


SMALL = {"tiny_conv": (tiny_conv, (3, 8, 8)), "residual": TINY_MODELS["residual"],
         "depthwise": TINY_MODELS["depthwise"]}


@pytest.mark.parametrize("name", list(SMALL))
def test_small_nets_match_pytorch_fp32(tmp_path, name):
    factory, shape = SMALL[name]
    torch.manual_seed(1)
    model = factory()
    res = export_onnx(model, tmp_path / "m.onnx", (2, *shape), "fp32")
    assert model.training  # the caller's module is not switched to eval
    assert res.verified and res.max_abs_diff <= res.tolerance and res.size_bytes == (tmp_path / "m.onnx").stat().st_size
    data = (tmp_path / "m.onnx").read_bytes()
    onnx.checker.check_model(onnx.load_from_string(data))
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    np.testing.assert_allclose(ort_run(data, x), torch_ref(model, x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", [n for n in list_models() if model_spec(n).source == "zoo"])
def test_zoo_models_export_fp32_after_pruning(tmp_path, name):
    """Every zoo model, pruned by a random plan, exports to ONNX that matches PyTorch in ORT."""
    from locp_trt.prune.graph import build_graph
    from locp_trt.prune.plan import PruningPlan, apply_plan

    torch.manual_seed(0)
    shape = model_spec(name).input_shape
    base = get_model(name)
    rng = np.random.default_rng(0)
    graph = build_graph(base, shape)
    widths = {g.id: int(rng.integers(max(1, g.width // 3), g.width + 1)) for g in graph.prunable()}
    model, _ = apply_plan(base, PruningPlan(name, shape, widths), shape)
    assert build_graph(model, shape).widths() != graph.widths()
    res = export_onnx(model, tmp_path / f"{name}.onnx", (1, *shape), Precision.FP32)
    assert res.verified and res.max_abs_diff <= res.tolerance
    graph = onnx.load(str(res.path)).graph
    assert graph.input[0].name == "input" and graph.output[0].name == "output"
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, *model_spec(name).input_shape]


@pytest.mark.parametrize("name", ["tiny_conv", "depthwise"])
def test_fp16_graph_is_fp16_and_runs_in_ort_cpu(tmp_path, name):
    factory, shape = SMALL[name]
    model = factory()
    res = export_onnx(model, tmp_path / "h.onnx", (1, *shape), "fp16")
    m = onnx.load(str(res.path))
    half = onnx.TensorProto.FLOAT16
    assert m.graph.input[0].type.tensor_type.elem_type == half
    assert m.graph.output[0].type.tensor_type.elem_type == half
    floats = [t for t in m.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, half)]
    assert floats and all(t.data_type == half for t in floats)
    # ONNX Runtime 1.17+ CPU runs these fp16 graphs (Conv/Gemm/BN/pooling in fp16): checked for real.
    assert res.verified and res.max_abs_diff <= res.tolerance, res.note
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    out = ort_run(res.path.read_bytes(), x.astype(np.float16))
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), torch_ref(model, x), atol=2e-2, rtol=2e-2)


def test_float_to_half_conversion():
    factory, shape = TINY_MODELS["residual"]
    torch.manual_seed(2)
    model = factory().eval()
    fp32 = onnx_bytes_from_module(model, (2, *shape), "fp32")
    fp16 = onnx_float_to_half(fp32)
    m = onnx.load_from_string(fp16)
    assert all(t.data_type != onnx.TensorProto.FLOAT for t in m.graph.initializer)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    diff, tol, note = verify_onnx(model, fp16, (2, *shape), "fp16")
    assert note == "" and diff <= tol
    assert len(fp16) < 0.75 * len(fp32)  # weights halved


def test_fp16_falls_back_to_graph_conversion():
    class HalfHostile(nn.Module):
        """Stands for a layer without a CPU Half kernel: tracing it in fp16 fails."""

        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_conv()

        def forward(self, x):
            if x.dtype == torch.float16:
                raise RuntimeError('"slow_conv2d_cpu" not implemented for \'Half\'')
            return self.net(x)

    model = HalfHostile()
    data = onnx_bytes_from_module(model, (1, 3, 8, 8), "fp16")
    m = onnx.load_from_string(data)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    diff, tol, _ = verify_onnx(model, data, (1, 3, 8, 8), "fp16")
    assert diff <= tol


def test_dynamic_batch_runs_batch_1_and_3(tmp_path):
    factory, shape = TINY_MODELS["residual"]
    model = factory()
    res = export_onnx(model, tmp_path / "d.onnx", (1, *shape), "fp32", dynamic_batch=True)
    assert res.dynamic_batch
    data = res.path.read_bytes()
    assert onnx.load_from_string(data).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, *shape)).astype(np.float32)
        out = ort_run(data, x)
        assert out.shape == (n, 4)
        np.testing.assert_allclose(out, torch_ref(model, x), atol=1e-4, rtol=1e-4)


def test_dynamo_exporter_path():
    model = tiny_conv()
    data = onnx_bytes_from_module(model, (2, 3, 8, 8), "fp32", exporter=Exporter.DYNAMO, dynamic_batch=True)
    diff, tol, _ = verify_onnx(model, data, (3, 3, 8, 8), "fp32")
    assert diff <= tol


def test_verification_catches_a_wrong_graph():
    a, b = tiny_conv(), tiny_conv()
    with torch.no_grad():
        b[0].weight.mul_(-1.0)
    data = onnx_bytes_from_module(b, (1, 3, 8, 8), "fp32")
    with pytest.raises(ExportError, match=r"differs from PyTorch by .*allowed"):
        verify_onnx(a, data, (1, 3, 8, 8), "fp32")


def test_export_failures_are_locp_errors(tmp_path):
    class FFT(nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    with pytest.raises(ExportError, match="torchscript: .*fft_rfft.*try another --opset"):
        onnx_bytes_from_module(FFT(), (1, 8), "fp32", exporter=Exporter.TORCHSCRIPT)
    with pytest.raises(InvalidConfigError, match="batch first"):
        export_onnx(tiny_conv(), tmp_path / "x.onnx", (0, 3, 8, 8), "fp32")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is importable here")
def test_engine_build_without_tensorrt(tmp_path):
    export_onnx(tiny_conv(), tmp_path / "m.onnx", (1, 3, 8, 8), "fp16")
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed here .* no engine was built"):
        build_trt_engine(tmp_path / "m.onnx", tmp_path / "m.engine", "fp16", get_device("desktop"))
    assert not (tmp_path / "m.engine").exists()


def test_engine_build_refuses_dynamic_shapes(tmp_path):
    export_onnx(tiny_conv(), tmp_path / "d.onnx", (1, 3, 8, 8), "fp32", dynamic_batch=True, verify=False)
    with pytest.raises(InvalidConfigError, match=r"symbolic input dimensions \(input \['batch', 3, 8, 8\]\)"):
        build_trt_engine(tmp_path / "d.onnx", tmp_path / "d.engine", "fp32", get_device("desktop"))


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(not HAS_TRT or not torch.cuda.is_available(), reason="needs TensorRT and a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_build_with_tensorrt(tmp_path, precision):
    export_onnx(tiny_conv(), tmp_path / "m.onnx", (1, 3, 8, 8), precision)
    out = build_trt_engine(tmp_path / "m.onnx", tmp_path / "m.engine", precision, get_device("desktop"),
                           timing_cache=tmp_path / "timing.cache")
    assert out.stat().st_size > 0
    info = json.loads((tmp_path / "m.engine.json").read_text())
    assert info["precision"] == precision and info["device_profile"] == "desktop"
    assert info["tensorrt"] and info["gpu"] and info["built_utc"] and info["num_layers"] >= 1
    assert [t["mode"] for t in info["io_tensors"]] == ["INPUT", "OUTPUT"]


def _export_cmd(args: list[str]) -> int:
    from locp_trt.cli.export_cmd import Command

    parser = argparse.ArgumentParser()
    Command.add_arguments(parser)
    return Command().run(parser.parse_args(args))


def test_export_command(tmp_path, capsys):
    torch.save(get_model("lenet5").state_dict(), tmp_path / "lenet.pt")
    out = tmp_path / "out"
    assert _export_cmd([str(tmp_path / "lenet.pt"), "--arch", "lenet5", "--out", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "fp32, opset 17, input 1x1x28x28" in text and "does not use TensorRT" in text
    summary = json.loads((out / "model.export.json").read_text())
    assert summary["onnx"]["verified"] and summary["engine"] is None
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    model = get_model("lenet5")
    model.load_state_dict(torch.load(tmp_path / "lenet.pt"))
    np.testing.assert_allclose(ort_run((out / "model.onnx").read_bytes(), x), torch_ref(model, x), atol=1e-4)
    with pytest.raises(LocpError, match="--arch"):
        _export_cmd([str(tmp_path / "lenet.pt"), "--out", str(out)])


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is importable here")
def test_export_command_jetson_without_tensorrt(tmp_path, capsys):
    torch.save(get_model("lenet5").state_dict(), tmp_path / "lenet.pt")
    out = tmp_path / "out"
    code = _export_cmd([str(tmp_path / "lenet.pt"), "--arch", "lenet5", "--out", str(out), "--device", "jetson",
                        "--dynamic-batch", "--name", "n"])
    assert code == 0
    text = capsys.readouterr().out
    assert "fp16" in text and "input Nx1x28x28" in text and "TensorRT is not installed here" in text
    assert sorted(p.name for p in out.iterdir()) == ["n.export.json", "n.onnx"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_onnx_file_mode_follows_the_umask(tmp_path, umask):
    """model.onnx gets the permissions of any new file (0644 under the usual umask), not the
    private 0600 of a temporary file renamed into place; no temporary file is left."""
    import os
    import stat

    old = os.umask(umask)
    try:
        path = export_onnx(tiny_conv(), tmp_path / "model.onnx", (1, 3, 8, 8), verify=False).path
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
