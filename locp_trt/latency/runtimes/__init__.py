"""Runtime registry: look up a backend by name, or pick the best available one with `auto`."""

from __future__ import annotations

import difflib
import importlib

from ...errors import BackendUnavailableError, InvalidConfigError
from ..timing import BenchConfig
from .base import Runtime

__all__ = ["Runtime", "get_runtime", "list_runtimes", "runtime_class", "AUTO_ORDER"]

# name -> "module:Class", imported only when asked for so `import locp_trt` needs no backend.
_REGISTRY: dict[str, str] = {
    "tensorrt": "locp_trt.latency.runtimes.tensorrt_rt:TensorRTRuntime",
    "onnxruntime-cuda": "locp_trt.latency.runtimes.onnxrt:OrtCudaRuntime",
    "torch": "locp_trt.latency.runtimes.torch_rt:TorchCudaRuntime",
    "torch-cpu": "locp_trt.latency.runtimes.torch_rt:TorchCpuRuntime",
    "onnxruntime": "locp_trt.latency.runtimes.onnxrt:OrtCpuRuntime",
}
_ALIASES = {"ort": "onnxruntime", "onnxruntime-cpu": "onnxruntime", "trt": "tensorrt",
            "torch-cuda": "torch", "ort-cuda": "onnxruntime-cuda"}

#: `--runtime auto` tries these in order and takes the first available.
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "torch", "onnxruntime")


def list_runtimes() -> list[str]:
    """All registered runtime names (available here or not)."""
    return list(_REGISTRY)


def runtime_class(name: str) -> type[Runtime]:
    """The class registered under `name` (or an alias); unknown names list the valid ones."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _REGISTRY:
        names = list(_REGISTRY) + list(_ALIASES)
        close = sorted((n for n in _REGISTRY if n.startswith(key)), key=len) if key else []  # "onnx"
        close += [n for n in difflib.get_close_matches(key, names, n=3) if n not in close]
        close = close[:3]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise InvalidConfigError(
            f"unknown runtime {name!r}; valid: auto, {', '.join(_REGISTRY)}.{hint}"
        )
    mod, cls = _REGISTRY[key].split(":")
    return getattr(importlib.import_module(mod), cls)


def get_runtime(name: str = "auto", bench: BenchConfig | None = None, **kwargs) -> Runtime:
    """Instantiate a runtime by name; `auto` picks TensorRT, ORT-CUDA, torch-CUDA, then ORT-CPU.

    Raises `BackendUnavailableError` (with the install hint) when the named runtime cannot run here.
    """
    if name.lower() == "auto":
        reasons = []
        for candidate in AUTO_ORDER:
            cls = runtime_class(candidate)
            reason = cls.unavailable_reason()
            if reason is None:
                return cls(bench, **kwargs)
            reasons.append(f"{candidate}: {reason}")
        raise BackendUnavailableError("no runtime is available: " + "; ".join(reasons))
    cls = runtime_class(name)
    reason = cls.unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(f"runtime {name!r} is not available here: {reason}")
    return cls(bench, **kwargs)
