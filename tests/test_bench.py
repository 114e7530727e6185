"""`bench`: end-to-end timing of .pt / .onnx / .engine files, its JSON rows and its errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from locp_trt.cli import main
from locp_trt.deploy.bench import (
    BenchResult,
    ModelFormat,
    bench_file,
    model_format,
    onnx_input_info,
)
from locp_trt.deploy.export import onnx_bytes_from_module
from locp_trt.errors import BackendUnavailableError, InvalidConfigError, ModelLoadError
from locp_trt.latency.config import Precision
from locp_trt.latency.timing import BenchConfig
from locp_trt.models import get_model

FAST = BenchConfig(warmup=1, iters=8, max_rel_spread=10.0)
FAST_ARGS = ["--iters", "8", "--warmup", "1", "--max-spread", "10"]


def _has_trt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or OSError when libnvinfer is missing
        return False
    return True


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """LeNet-5 (zoo) as a state_dict .pt, a fixed-batch .onnx and a dynamic-batch .onnx."""
    d = tmp_path_factory.mktemp("lenet")
    torch.manual_seed(0)
    model = get_model("lenet5").eval()
    torch.save(model.state_dict(), d / "lenet.pt")
    (d / "lenet.onnx").write_bytes(onnx_bytes_from_module(model, (1, 1, 28, 28), "fp32"))
    (d / "lenet_dyn.onnx").write_bytes(onnx_bytes_from_module(model, (1, 1, 28, 28), "fp32", dynamic_batch=True))
    return d


def test_bench_pt_and_onnx_on_ort_cpu(lenet, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["bench", str(lenet / "lenet.pt"), str(lenet / "lenet.onnx"), "--arch", "lenet5",
                 "--runtime", "onnxruntime", "--json", str(out), *FAST_ARGS]) == 0
    printed = capsys.readouterr().out
    assert "lenet.pt" in printed and "lenet.onnx" in printed and "median" in printed
    rows = json.loads(out.read_text())
    assert [r["format"] for r in rows] == ["torch", "onnx"]
    n_params = sum(p.numel() for p in get_model("lenet5").parameters())
    for r in rows:
        assert all(not isinstance(v, (dict, list)) for v in r.values())  # flat rows
        for key in ("median_us", "p10_us", "p90_us", "min_us", "max_us", "median_ms", "throughput_per_s"):
            assert r[key] > 0, key
        assert r["min_us"] <= r["p10_us"] <= r["median_us"] <= r["p90_us"] <= r["max_us"]
        assert r["iqr_us"] >= 0 and r["n"] == 8 and r["batch"] == 1 and r["input_shape"] == "1x1x28x28"
        assert r["runtime"] == "onnxruntime" and r["precision"] == "fp32"
        assert r["fp_runtime"] == "onnxruntime" and r["fp_device"] and len(r["fingerprint_key"]) == 16
        assert r["params"] == n_params  # torch parameters; ONNX initializers of the same weights
    assert rows[0]["flops"] > 0 and rows[0]["arch"] == "lenet5"
    assert rows[1]["flops"] is None and rows[1]["arch"] is None


def test_bench_file_api(lenet):
    r = bench_file(lenet / "lenet.pt", runtime="torch-cpu", arch="lenet5", bench_cfg=FAST, batch=2)
    assert isinstance(r, BenchResult) and r.format is ModelFormat.TORCH
    assert r.runtime == "torch-cpu" and r.input_shape == (2, 1, 28, 28) and r.batch == 2
    assert r.timing.median_us > 0 and len(r.timing.samples_us) == 8
    assert r.fingerprint["runtime"] == "torch-cpu" and r.flops > 0 and r.params > 0
    assert r.row()["runtime_label"].startswith("torch-cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.path = "x"  # type: ignore[misc]


def test_bench_flops_double_with_the_batch(lenet):
    one = bench_file(lenet / "lenet.pt", runtime="onnxruntime", arch="lenet5", bench_cfg=FAST)
    two = bench_file(lenet / "lenet.pt", runtime="onnxruntime", arch="lenet5", bench_cfg=FAST, batch=2)
    assert two.flops == 2 * one.flops and two.params == one.params


def test_onnx_batch_comes_from_the_file(lenet):
    dyn = bench_file(lenet / "lenet_dyn.onnx", runtime="onnxruntime", batch=3, bench_cfg=FAST)
    assert dyn.input_shape == (3, 1, 28, 28) and dyn.precision is Precision.FP32
    assert bench_file(lenet / "lenet_dyn.onnx", runtime="onnxruntime", bench_cfg=FAST).batch == 1
    assert bench_file(lenet / "lenet.onnx", runtime="auto", bench_cfg=FAST).batch == 1
    with pytest.raises(InvalidConfigError, match="fixed batch of 1, not --batch 2"):
        bench_file(lenet / "lenet.onnx", runtime="onnxruntime", batch=2, bench_cfg=FAST)
    name, dims, prec, params = onnx_input_info((lenet / "lenet_dyn.onnx").read_bytes())
    assert dims[1:] == [1, 28, 28] and isinstance(dims[0], str) and prec is Precision.FP32 and params > 0


def test_bench_errors(lenet, tmp_path, capsys):
    with pytest.raises(InvalidConfigError, match="torch modules, not ONNX"):
        bench_file(lenet / "lenet.onnx", runtime="torch-cpu")
    with pytest.raises(InvalidConfigError, match="only TensorRT can run an fp32 graph in fp16"):
        bench_file(lenet / "lenet.onnx", runtime="onnxruntime", precision="fp16")
    with pytest.raises(InvalidConfigError, match="unknown runtime"):
        bench_file(lenet / "lenet.onnx", runtime="onxruntime")
    with pytest.raises(ModelLoadError, match="not found"):
        bench_file(tmp_path / "nope.onnx", runtime="onnxruntime")
    with pytest.raises(ModelLoadError, match="--arch"):
        bench_file(lenet / "lenet.pt", runtime="onnxruntime")
    assert model_format("a/b.PTH") is ModelFormat.TORCH and model_format("m.plan") is ModelFormat.ENGINE

    (tmp_path / "model.txt").write_text("hello")
    capsys.readouterr()
    assert main(["bench", str(tmp_path / "model.txt")]) == 1
    err = capsys.readouterr().err
    assert "cannot tell the model format" in err and "Traceback" not in err
    assert main(["bench", str(tmp_path / "no_such_run")]) == 1
    assert "no_such_run does not exist" in capsys.readouterr().err
    (tmp_path / "garbage.onnx").write_bytes(b"\x00not onnx at all")
    assert main(["bench", str(tmp_path / "garbage.onnx"), "--runtime", "onnxruntime"]) == 1
    assert "not a readable ONNX model" in capsys.readouterr().err


@pytest.mark.skipif(_has_trt(), reason="checks the message shown where TensorRT is missing")
def test_engine_without_tensorrt_is_one_line(tmp_path, capsys):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(BackendUnavailableError, match="TensorRT engine"):
        bench_file(engine)
    assert main(["bench", str(engine)]) == 1
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err_lines) == 2, err_lines  # the error, then the FAILED summary
    assert err_lines[0].startswith("error: cannot time the TensorRT engine") and "FAILED" in err_lines[1]
    with pytest.raises(InvalidConfigError, match="only under --runtime tensorrt"):
        bench_file(engine, runtime="onnxruntime")


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(not _has_trt() or not torch.cuda.is_available(), reason="needs TensorRT and a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_bench_engine_with_tensorrt(lenet, tmp_path, precision):
    from locp_trt.deploy.devices import get_device
    from locp_trt.deploy.export import build_trt_engine, export_onnx

    model = get_model("lenet5").eval()
    export_onnx(model, tmp_path / "m.onnx", (2, 1, 28, 28), precision)
    engine = build_trt_engine(tmp_path / "m.onnx", tmp_path / "m.engine", precision, get_device("desktop"),
                              timing_cache=tmp_path / "timing.cache")
    r = bench_file(engine, runtime="auto", bench_cfg=FAST)
    assert r.format is ModelFormat.ENGINE and r.runtime == "tensorrt"
    assert r.input_shape == (2, 1, 28, 28) and r.precision is Precision(precision)
    assert r.timing.median_us > 0 and r.fingerprint["runtime"] == "tensorrt"
    on = bench_file(tmp_path / "m.onnx", runtime="tensorrt", bench_cfg=FAST)
    assert on.format is ModelFormat.ONNX and on.timing.median_us > 0
    pt = tmp_path / "l.pt"
    torch.save(model.state_dict(), pt)
    tp = bench_file(pt, runtime="tensorrt", arch="lenet5", precision=precision, bench_cfg=FAST)
    assert tp.timing.median_us > 0 and tp.precision is Precision(precision)


def test_two_files_with_one_name_are_told_apart_and_timed_interleaved(lenet, tmp_path, capsys):
    """`bench A/model.onnx B/model.onnx`: rows name the folders, the files are timed in
    interleaved rounds, and each later file gets its speedup over the first with an interval."""
    from locp_trt.cli.bench_cmd import distinct_names

    assert distinct_names(["runs/a/model.onnx", "runs/b/model.onnx"]) == ["a/model.onnx", "b/model.onnx"]
    assert distinct_names(["x/lenet.pt", "y/other.onnx"]) == ["lenet.pt", "other.onnx"]
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes((lenet / "lenet.onnx").read_bytes())
    out = tmp_path / "rows.json"
    assert main(["bench", str(tmp_path / "A" / "model.onnx"), str(tmp_path / "B" / "model.onnx"),
                 "--runtime", "onnxruntime", "--json", str(out), *FAST_ARGS]) == 0
    printed = capsys.readouterr().out
    assert "A/model.onnx" in printed and "B/model.onnx" in printed and "interleaved" in printed
    rows = json.loads(out.read_text())
    assert rows[0]["speedup_vs_first"] is None
    second = rows[1]
    assert second["speedup_vs_first_low"] <= second["speedup_vs_first"] <= second["speedup_vs_first_high"]
    assert second["interleaved_rounds"] >= 3
