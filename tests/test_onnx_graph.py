"""One-layer ONNX graphs: structure, determinism, and numerics against torch's reference ops."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from locp_trt.latency.config import LayerConfig, Op, Precision
from locp_trt.latency.onnx_graph import build_layer_onnx, layer_onnx_input

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

CASES = {
    "conv3x3": LayerConfig(Op.CONV, 8, 12, kernel=3, padding=1, input_hw=(9, 9), batch=2),
    "conv3x3_stride2": LayerConfig(Op.CONV, 8, 16, kernel=3, stride=2, padding=1, input_hw=(9, 7)),
    "depthwise_stride2": LayerConfig(Op.CONV, 16, 16, kernel=3, stride=2, padding=1, groups=16,
                                     input_hw=(10, 10)),
    "grouped_1x1_nobias": LayerConfig(Op.CONV, 8, 12, kernel=1, groups=4, input_hw=(5, 5), bias=False),
    "conv5x5_nopad": LayerConfig(Op.CONV, 4, 6, kernel=5, input_hw=(7, 8)),
    "linear": LayerConfig(Op.LINEAR, 32, 10, batch=3),
    "linear_nobias": LayerConfig(Op.LINEAR, 16, 7, bias=False),
}


def _run_ort(cfg: LayerConfig, model: bytes) -> np.ndarray:
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": layer_onnx_input(cfg)})[0]


def _reference(cfg: LayerConfig, model: bytes) -> np.ndarray:
    """The same layer computed by torch, from the graph's own initializers (in fp32)."""
    inits = {t.name: numpy_helper.to_array(t).astype(np.float32)
             for t in onnx.load_from_string(model).graph.initializer}
    x = torch.from_numpy(layer_onnx_input(cfg).astype(np.float32))
    w = torch.from_numpy(inits["W"])
    b = torch.from_numpy(inits["B"]) if "B" in inits else None
    if cfg.op is Op.LINEAR:
        y = torch.nn.functional.linear(x, w, b)
    else:
        y = torch.nn.functional.conv2d(x, w, b, stride=cfg.stride, padding=cfg.padding, groups=cfg.groups)
    return y.numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_fp32_graph_matches_torch_reference(name):
    cfg = CASES[name]
    model = build_layer_onnx(cfg)
    y = _run_ort(cfg, model)
    assert y.shape == cfg.output_shape and y.dtype == np.float32
    np.testing.assert_allclose(y, _reference(cfg, model), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["conv3x3", "depthwise_stride2", "linear"])
def test_fp16_graph_is_fp16_throughout_and_close_to_reference(name):
    cfg = LayerConfig.from_dict({**CASES[name].to_dict(), "precision": "fp16"})
    model = build_layer_onnx(cfg)
    g = onnx.load_from_string(model).graph
    assert g.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert g.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert all(t.data_type == TensorProto.FLOAT16 for t in g.initializer)
    y = _run_ort(cfg, model)
    assert y.dtype == np.float16 and y.shape == cfg.output_shape
    np.testing.assert_allclose(y.astype(np.float32), _reference(cfg, model), rtol=2e-2, atol=2e-2)


def test_graph_structure_names_and_attributes():
    cfg = CASES["depthwise_stride2"]
    m = onnx.load_from_string(build_layer_onnx(cfg, opset=13))
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["x"] and [o.name for o in m.graph.output] == ["y"]
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert tuple(dims) == cfg.input_shape
    (node,) = m.graph.node
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert node.op_type == "Conv"
    assert attrs["group"] == 16 and list(attrs["strides"]) == [2, 2] and list(attrs["pads"]) == [1] * 4
    assert {o.domain: o.version for o in m.opset_import}[""] == 13
    gemm = onnx.load_from_string(build_layer_onnx(CASES["linear"])).graph.node[0]
    assert gemm.op_type == "Gemm"
    assert {a.name: onnx.helper.get_attribute_value(a) for a in gemm.attribute}["transB"] == 1


def test_weights_are_seeded():
    cfg = CASES["conv3x3"]
    assert build_layer_onnx(cfg, seed=3) == build_layer_onnx(cfg, seed=3)
    assert build_layer_onnx(cfg, seed=3) != build_layer_onnx(cfg, seed=4)
    np.testing.assert_array_equal(layer_onnx_input(cfg, 1), layer_onnx_input(cfg, 1))
    assert layer_onnx_input(cfg).dtype == np.float32
    assert layer_onnx_input(LayerConfig.from_dict({**cfg.to_dict(), "precision": Precision.FP16})).dtype == np.float16


def test_no_torch_needed_to_build_graphs():
    import subprocess
    import sys

    code = ("import sys\nfrom locp_trt.latency.onnx_graph import build_layer_onnx\n"
            "from locp_trt.latency.config import LayerConfig, Op\n"
            "build_layer_onnx(LayerConfig(Op.CONV, 4, 4, kernel=3, input_hw=(5, 5)))\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
