"""Final artifacts: ONNX from a torch module (checked against PyTorch), TensorRT engines.

The torch -> ONNX conversion itself lives in `latency/torch_onnx.py` (runtimes time modules
through it); its names are re-exported here.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendUnavailableError, InvalidConfigError
from ..latency.config import Precision
from ..latency.torch_onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    Exporter,
    ExportError,
    check_shape,
    onnx_bytes_from_module,
    onnx_float_to_half,
)

if TYPE_CHECKING:
    import torch

    from .devices import DeviceProfile

__all__ = [
    "Exporter",
    "ExportError",
    "ExportResult",
    "onnx_bytes_from_module",
    "onnx_float_to_half",
    "export_onnx",
    "verify_onnx",
    "build_trt_engine",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "DEFAULT_ATOL",
]

#: Allowed max |ORT - PyTorch| per unit of output scale (max(1, max |PyTorch output|)).
DEFAULT_ATOL = {Precision.FP32: 1e-4, Precision.FP16: 2e-2}

_log = logging.getLogger("locp_trt.deploy.export")


@dataclass(frozen=True)
class ExportResult:
    """One written ONNX file and how well it reproduces the PyTorch model."""

    path: Path
    precision: Precision
    opset: int
    input_shape: tuple[int, ...]  # (N, C, H, W) the graph was traced with
    dynamic_batch: bool
    size_bytes: int
    verified: bool  # ONNX Runtime CPU outputs were compared with PyTorch's
    max_abs_diff: float | None  # max |ORT - PyTorch| over the outputs; None when not verified
    tolerance: float | None  # the bound max_abs_diff was checked against
    note: str = ""  # why verification was skipped, or which exporter fell back

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"path": str(self.path), "precision": self.precision.value, "opset": self.opset,
                "input_shape": list(self.input_shape), "dynamic_batch": self.dynamic_batch,
                "size_bytes": self.size_bytes, "verified": self.verified,
                "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance, "note": self.note}


# ---- verification --------------------------------------------------------------------------------
def _flat_outputs(out: Any) -> list[np.ndarray]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out.detach().float().cpu().numpy()]
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _flat_outputs(o)]
    if isinstance(out, dict):
        return [a for k in out for a in _flat_outputs(out[k])]
    raise ExportError(f"model output of type {type(out).__name__} cannot be compared; return tensors")


def verify_onnx(module: torch.nn.Module, onnx_bytes: bytes, input_shape: tuple[int, ...],
                precision: Precision | str, *, atol: float | None = None, seed: int = 0,
                threads: int = 1) -> tuple[float | None, float, str]:
    """Compare ONNX Runtime CPU outputs with PyTorch fp32 outputs on a random normal input.

    Returns (max_abs_diff, tolerance, note); max_abs_diff is None (with the reason in note) when
    ONNX Runtime's CPU provider has no kernel for this graph (some fp16 ops).

    Raises:
        ExportError: the outputs differ by more than `atol` x max(1, max |PyTorch output|).
    """
    import onnxruntime as ort
    import torch

    precision = Precision.coerce(precision)
    shape = check_shape(input_shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = _flat_outputs(copy.deepcopy(module).cpu().float().eval()(x))
    scale = max(1.0, max(float(np.abs(r).max()) for r in ref if r.size))
    tol = (DEFAULT_ATOL[precision] if atol is None else float(atol)) * scale
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - classified: a missing kernel is not a broken graph
        text = str(e)
        if precision is Precision.FP16 and ("NOT_IMPLEMENTED" in text or "Could not find an implementation" in text):
            return None, tol, f"not verified: ONNX Runtime CPU has no fp16 kernel here ({text.splitlines()[0][:200]})"
        raise ExportError(f"ONNX Runtime cannot load the exported graph: {text.splitlines()[0][:300]}") from None
    feed_dtype = np.float16 if sess.get_inputs()[0].type == "tensor(float16)" else np.float32
    try:
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy().astype(feed_dtype)})
    except Exception as e:  # noqa: BLE001
        text = str(e)
        if precision is Precision.FP16 and "NOT_IMPLEMENTED" in text:
            return None, tol, f"not verified: ONNX Runtime CPU has no fp16 kernel here ({text.splitlines()[0][:200]})"
        raise ExportError(f"ONNX Runtime failed to run the exported graph: {text.splitlines()[0][:300]}") from None
    if len(got) != len(ref):
        raise ExportError(f"the ONNX graph has {len(got)} outputs, PyTorch returned {len(ref)}")
    diff = 0.0
    for g, r in zip(got, ref, strict=True):
        if g.shape != r.shape:
            raise ExportError(f"ONNX output shape {g.shape} differs from PyTorch's {r.shape}")
        diff = max(diff, float(np.abs(g.astype(np.float32) - r).max()) if r.size else 0.0)
    if not diff <= tol:  # also catches NaN
        raise ExportError(
            f"ONNX Runtime output differs from PyTorch by {diff:.3g} (allowed {tol:.3g} = atol x output "
            f"scale {scale:.3g}) at {precision.value}; the export mis-translated a layer: try another "
            "--opset" + (" or fp32" if precision is Precision.FP16 else "")
        )
    return diff, tol, ""


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `path` through a temporary file next to it and a rename, so readers never see half
    a file. The temporary file is opened like any new file (mode 0666 less the umask, 0644
    usually), not with `tempfile.mkstemp`'s private 0600, which the rename would keep."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def export_onnx(model: torch.nn.Module, path: str | Path, input_shape: tuple[int, ...],
                precision: Precision | str = Precision.FP32, *, opset: int = 17, dynamic_batch: bool = False,
                verify: bool = True, atol: float | None = None,
                exporter: Exporter = Exporter.AUTO) -> ExportResult:
    """Write `model` as ONNX to `path`, check it with onnx.checker and (optionally) ONNX Runtime.

    Args:
        model: the model; not modified.
        path: output .onnx file (parent folders are created; written atomically).
        input_shape: full input shape, batch first, e.g. (1, 3, 32, 32).
        precision: fp32 or fp16.
        opset: ONNX opset version.
        dynamic_batch: symbolic batch dimension.
        verify: compare ONNX Runtime CPU outputs with PyTorch (fp32 reference).
        atol: allowed max abs difference per unit of output scale (default `DEFAULT_ATOL`).
        exporter: torch.onnx exporter to use.

    Raises:
        ExportError: export failed, the checker rejected the graph, or the outputs differ.
    """
    import onnx

    precision = Precision.coerce(precision)
    shape = check_shape(input_shape)
    data = onnx_bytes_from_module(model, shape, precision, opset=opset, dynamic_batch=dynamic_batch,
                                  exporter=exporter)
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as e:  # noqa: BLE001 - onnx raises several types
        raise ExportError(f"the exported graph fails onnx.checker: {str(e).splitlines()[0][:300]}") from None
    diff, tol, note = (None, None, "not verified (verify=False)")
    if verify:
        diff, tol, note = verify_onnx(model, data, shape, precision, atol=atol)
    path = Path(path)
    _write_atomic(path, data)
    return ExportResult(path, precision, int(opset), shape, bool(dynamic_batch), len(data),
                        diff is not None, diff, tol, note)


# ---- TensorRT ----------------------------------------------------------------------------------
def _symbolic_inputs(onnx_bytes: bytes) -> list[str]:
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    init = {i.name for i in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in init:
            continue
        dims = vi.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            out.append(f"{vi.name} {shown}")
    return out


def build_trt_engine(onnx_path: str | Path, engine_path: str | Path, precision: Precision | str,
                     profile: DeviceProfile, timing_cache: str | Path | None = None) -> Path:
    """Build a TensorRT engine from an ONNX file for `profile`; write it and `<engine>.json`.

    Engines only run on the TensorRT version and GPU model that built them, so the side file
    records TensorRT version, GPU, driver, precision, build options and the build date (UTC).

    Args:
        onnx_path: a fixed-shape ONNX file (export without dynamic batch).
        engine_path: output .engine file.
        precision: fp32 or fp16 (an fp16 ONNX graph is built strongly typed where TensorRT can).
        profile: workspace limit and DLA settings come from here.
        timing_cache: TensorRT timing cache file (default: per TensorRT version and GPU in
            ~/.cache/locp_trt).

    Raises:
        BackendUnavailableError: TensorRT is not importable here.
        InvalidConfigError: the ONNX graph has symbolic input dimensions.
        EngineBuildError: TensorRT could not parse or build the graph.
    """
    precision = Precision.coerce(precision)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    try:
        onnx_bytes = onnx_path.read_bytes()
    except OSError as e:
        raise InvalidConfigError(f"cannot read ONNX file {onnx_path}: {e}") from None
    symbolic = _symbolic_inputs(onnx_bytes)
    if symbolic:
        raise InvalidConfigError(
            f"{onnx_path} has symbolic input dimensions ({'; '.join(symbolic)}); engines are built for a "
            "fixed shape here: export again without --dynamic-batch"
        )
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # ImportError, or OSError when libnvinfer is missing
        raise BackendUnavailableError(
            f"TensorRT is not installed here (import tensorrt: {type(e).__name__}: {e}), so no engine was "
            "built; install TensorRT (JetPack on a Jetson, or pip install tensorrt from NVIDIA's index) "
            "on the target and build there: the ONNX file is portable, engines are not"
        ) from None
    from ..latency.runtimes.tensorrt_rt import TrtBuildOptions, build_engine, engine_info

    options = TrtBuildOptions(
        workspace_mib=profile.workspace_mb or TrtBuildOptions().workspace_mib,
        dla_core=profile.dla_core, gpu_fallback=profile.gpu_fallback,
        use_timing_cache=True, timing_cache_path=Path(timing_cache) if timing_cache else None,
    )
    engine = build_engine(onnx_bytes, precision, options)
    _write_atomic(engine_path, engine)
    info = engine_info(precision, options, engine=engine)
    from .._version import __version__

    info.update({
        "built_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device_profile": profile.name,
        "onnx": onnx_path.name,
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "engine_bytes": len(engine),
        "locp_trt": __version__,
        "portable": False,
        "note": "a TensorRT engine runs only with the TensorRT version and GPU model that built it; "
                "rebuild from the ONNX file elsewhere",
    })
    side = engine_path.with_name(engine_path.name + ".json")
    _write_atomic(side, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    return engine_path
