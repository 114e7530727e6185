"""torch module -> ONNX bytes, at a precision: what runtimes time and `export` writes.

Exporter choice: torch 2.13 still ships the TorchScript-based exporter (`dynamo=False`). On the
zoo models (ResNet, VGG, MobileNetV2, LeNet5) it is several times faster than the
torch.export-based one (well under a second against seconds), quiet once its deprecation
warnings are filtered, honours the asked opset directly, and traces fp16 modules on the CPU. The
dynamo exporter at opset 17 first emits opset 18 and then fails its down-conversion of Reduce ops
("axes_input_to_attribute") while still returning a model, and prints progress lines. So
`Exporter.AUTO` uses TorchScript and falls back to dynamo only when TorchScript fails (or no
longer exists in a future torch).

fp16: the module is cast to half and traced as is. Should tracing in half fail (a CPU op without
a Half kernel), the fp32 graph is exported and converted with `onnx_float_to_half`: float
initializers, constants, graph inputs/outputs/value_info and Cast targets become fp16, except
inputs the ONNX spec keeps in fp32 (Resize scales).

It lives under `latency/` because runtimes time torch modules through it; torch is imported
inside the functions, so importing this module needs only numpy.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import io
import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidConfigError, UnsupportedLayerError, first_line
from .config import Precision

if TYPE_CHECKING:
    import torch

__all__ = ["Exporter", "ExportError", "onnx_bytes_from_module", "onnx_float_to_half", "check_shape",
           "INPUT_NAME",
           "OUTPUT_NAME"]

INPUT_NAME = "input"
OUTPUT_NAME = "output"

_log = logging.getLogger("locp_trt.deploy.export")


class Exporter(str, enum.Enum):
    """Which torch.onnx exporter to use."""

    AUTO = "auto"  # TorchScript, then dynamo if that fails
    TORCHSCRIPT = "torchscript"  # torch.onnx.export(..., dynamo=False)
    DYNAMO = "dynamo"  # torch.onnx.export(..., dynamo=True), needs onnxscript


class ExportError(UnsupportedLayerError):
    """torch.onnx could not export the model, or the exported graph does not reproduce it."""


# ---- torch -> ONNX ------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet():
    """Silence the exporters' warnings, prints and log lines (errors still raise)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _mute_stdout_fd():
    """Silence fd 1 itself: on failure the TorchScript exporter dumps its IR graph from C++."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _torchscript_export(module: torch.nn.Module, x: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    import torch

    buf = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with _quiet(), _mute_stdout_fd():
        torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)
    return buf.getvalue()


def _dynamo_export(module: torch.nn.Module, x: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    import torch

    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with _quiet():
        program = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes=shapes, verbose=False)
    return program.model_proto.SerializeToString()


def _export(module: torch.nn.Module, x: torch.Tensor, opset: int, dynamic_batch: bool,
            exporter: Exporter) -> bytes:
    order = {Exporter.AUTO: (_torchscript_export, _dynamo_export),
             Exporter.TORCHSCRIPT: (_torchscript_export,), Exporter.DYNAMO: (_dynamo_export,)}[exporter]
    import torch

    try:  # a model that fails in PyTorch itself is not an ONNX problem: say so, not "--opset"
        with torch.no_grad(), _quiet():
            module(x)
    except Exception as e:  # noqa: BLE001 - any failure of the user's forward is one line
        raise ExportError(f"{type(module).__name__} does not run in PyTorch on input "
                          f"{tuple(x.shape)} {str(x.dtype).replace('torch.', '')} ({first_line(e, 300)}); "
                          "fix the model (a pruned layer left with 0 channels?) before exporting") from None
    errors: list[str] = []
    for fn in order:
        try:
            return fn(module, x, opset, dynamic_batch)
        except Exception as e:  # noqa: BLE001 - any exporter failure: try the next, report all
            errors.append(f"{fn.__name__.strip('_').replace('_export', '')}: {first_line(e, 300)}")
            _log.debug("ONNX export with %s failed", fn.__name__, exc_info=True)
    raise ExportError(f"torch.onnx.export failed for {type(module).__name__} with input "
                      f"{tuple(x.shape)} {str(x.dtype).replace('torch.', '')} ({'; '.join(errors)}); "
                      "a layer may have no ONNX mapping at this opset: try another --opset")


_FP32_ONLY_INPUTS = {("Resize", 2), ("Upsample", 1)}  # ONNX requires tensor(float) there


def onnx_float_to_half(model_bytes: bytes) -> bytes:
    """Convert an fp32 ONNX graph to fp16 (weights, constants, I/O, Cast targets).

    Inputs the ONNX spec types as float32 only (Resize/Upsample scales) are left alone.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load_from_string(model_bytes)
    g = model.graph
    keep = {node.input[i] for node in g.node for op, i in _FP32_ONLY_INPUTS
            if node.op_type == op and len(node.input) > i}

    def half_tensor(t: onnx.TensorProto) -> onnx.TensorProto:
        if t.data_type != TensorProto.FLOAT or t.name in keep:
            return t
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)

    for i, init in enumerate(list(g.initializer)):
        g.initializer[i].CopyFrom(half_tensor(init))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        tt = vi.type.tensor_type
        if tt.elem_type == TensorProto.FLOAT and vi.name not in keep:
            tt.elem_type = TensorProto.FLOAT16
    for node in g.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            elif attr.type == onnx.AttributeProto.TENSOR and not (set(node.output) & keep):
                if node.op_type in ("Constant", "ConstantOfShape"):
                    attr.t.CopyFrom(half_tensor(attr.t))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The full input shape (batch first) as ints; a clear error for anything else."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) < 2 or min(shape) < 1:
        raise InvalidConfigError(f"input_shape must be the full input shape with the batch first, e.g. "
                                 f"(1, 3, 32, 32); got {tuple(input_shape)}")
    return shape


def onnx_bytes_from_module(module: torch.nn.Module, input_shape: tuple[int, ...], precision: Precision | str, *,
                           opset: int = 17, dynamic_batch: bool = False,
                           exporter: Exporter = Exporter.AUTO) -> bytes:
    """Serialized ONNX model of `module` (a deep copy in eval mode, on the CPU) at `precision`.

    Args:
        module: the model; not modified.
        input_shape: full input shape, batch first, e.g. (1, 3, 32, 32).
        precision: fp32, or fp16 (weights, input and output in fp16).
        opset: ONNX opset version.
        dynamic_batch: make the batch dimension symbolic ("batch").
        exporter: which torch.onnx exporter (see the module docstring for why AUTO is TorchScript).

    Raises:
        ExportError: torch.onnx could not export the model.
    """
    import torch

    precision = Precision.coerce(precision)
    shape = check_shape(input_shape)
    model = copy.deepcopy(module).cpu().eval()
    if precision is Precision.FP16:
        try:
            half = copy.deepcopy(model).half()
            # AUTO: TorchScript only here; if it fails, the fp32 route below still tries both.
            first = Exporter.TORCHSCRIPT if exporter is Exporter.AUTO else exporter
            return _export(half, torch.zeros(shape, dtype=torch.float16), opset, dynamic_batch, first)
        except ExportError as e:
            _log.info("fp16 trace failed (%s); exporting fp32 and converting the graph", e)
    x = torch.zeros(shape, dtype=torch.float32)
    data = _export(model, x, opset, dynamic_batch, exporter)
    return onnx_float_to_half(data) if precision is Precision.FP16 else data
