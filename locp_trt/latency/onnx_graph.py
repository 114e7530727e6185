"""One-layer ONNX graphs for a `LayerConfig`, built with `onnx.helper` alone.

No torch is needed, so the profiler can run on a bare Jetson with only TensorRT and onnx. The
graph has one input "x" of `cfg.input_shape`, one output "y", and random weights from a fixed
seed (latency does not depend on weight values, but reproducible graphs make cache keys and
numeric checks stable). fp16 configs carry FLOAT16 everywhere (input, weights, output), which is
what a strongly typed TensorRT network needs to build in fp16.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .config import LayerConfig, Op, Precision

__all__ = ["build_layer_onnx", "layer_onnx_input", "numpy_dtype", "INPUT_NAME", "OUTPUT_NAME"]

INPUT_NAME = "x"
OUTPUT_NAME = "y"


def numpy_dtype(precision: Precision) -> type[np.floating]:
    """numpy dtype of tensors at `precision` (float16 or float32)."""
    return np.float16 if precision == Precision.FP16 else np.float32


def _onnx_elem_type(precision: Precision) -> int:
    return TensorProto.FLOAT16 if precision == Precision.FP16 else TensorProto.FLOAT


def _weights(cfg: LayerConfig, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Kaiming-uniform-like weights (bounded, so fp16 outputs cannot overflow) and a bias."""
    rng = np.random.default_rng(seed)
    fan_in = int(np.prod(cfg.weight_shape[1:]))
    bound = 1.0 / np.sqrt(fan_in)
    dtype = numpy_dtype(cfg.precision)
    w = rng.uniform(-bound, bound, size=cfg.weight_shape).astype(dtype)
    b = rng.uniform(-bound, bound, size=(cfg.out_channels,)).astype(dtype) if cfg.bias else None
    return w, b


def build_layer_onnx(cfg: LayerConfig, opset: int = 17, seed: int = 0) -> bytes:
    """Serialized ONNX model of the single layer `cfg` (Conv, or Gemm with transB=1 for linear).

    Args:
        cfg: the layer; its precision sets every tensor's element type.
        opset: default-domain opset to declare (Conv and Gemm are unchanged since opset 13).
        seed: seed of the random weights.

    Returns:
        The model as bytes, already checked with `onnx.checker` (full check, with shapes).
    """
    elem = _onnx_elem_type(cfg.precision)
    w, b = _weights(cfg, seed)
    inits = [numpy_helper.from_array(w, name="W")]
    inputs = [INPUT_NAME, "W"]
    if b is not None:
        inits.append(numpy_helper.from_array(b, name="B"))
        inputs.append("B")

    nodes = _pre_norm(cfg, inputs, inits) if cfg.pre_norm else []
    if cfg.op is Op.LINEAR:
        nodes.append(helper.make_node("Gemm", inputs, [OUTPUT_NAME], name="linear", transB=1))
    else:
        p = cfg.padding
        nodes.append(helper.make_node(
            "Conv", inputs, [OUTPUT_NAME], name="conv",
            kernel_shape=[cfg.kernel, cfg.kernel], strides=[cfg.stride, cfg.stride],
            pads=[p, p, p, p], dilations=[1, 1], group=cfg.groups,
        ))

    graph = helper.make_graph(
        nodes, f"locp_{cfg.op.value}",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, elem, list(cfg.input_shape))],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, elem, list(cfg.output_shape))],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", int(opset))]
    # The lowest IR version the opset allows: older parsers (TensorRT 8.6, older ORT) reject
    # models stamped with a newer IR version than they know, even when nothing else is new.
    model = helper.make_model(
        graph, opset_imports=opsets, producer_name="locp_trt",
        ir_version=helper.find_min_ir_version_for(opsets),
    )
    model.doc_string = str(cfg)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _pre_norm(cfg: LayerConfig, inputs: list[str], inits: list) -> list:
    """The LayerNorm over the input channels that runs before the layer (`cfg.pre_norm`): nodes
    to prepend; `inputs[0]` is rewired to its output. A conv's NCHW input is normalised as
    ConvNeXt's LayerNorm2d does it: transposed to NHWC, normalised over the last axis, back."""
    dtype = numpy_dtype(cfg.precision)
    c = cfg.in_channels
    inits += [numpy_helper.from_array(np.ones(c, dtype=dtype), name="LN_scale"),
              numpy_helper.from_array(np.zeros(c, dtype=dtype), name="LN_bias")]
    if cfg.op is Op.LINEAR:
        inputs[0] = "normed"
        return [helper.make_node("LayerNormalization", [INPUT_NAME, "LN_scale", "LN_bias"], ["normed"],
                                 name="norm", axis=-1, epsilon=1e-6)]
    inputs[0] = "normed"
    return [helper.make_node("Transpose", [INPUT_NAME], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("LayerNormalization", ["nhwc", "LN_scale", "LN_bias"], ["normed_nhwc"],
                             name="norm", axis=-1, epsilon=1e-6),
            helper.make_node("Transpose", ["normed_nhwc"], ["normed"], name="to_nchw", perm=[0, 3, 1, 2])]


def layer_onnx_input(cfg: LayerConfig, seed: int = 0) -> np.ndarray:
    """A standard-normal input of `cfg.input_shape` in the config's precision."""
    rng = np.random.default_rng(seed + 1)
    return rng.standard_normal(cfg.input_shape).astype(numpy_dtype(cfg.precision))
