"""TensorRT backend (`tensorrt`): build an engine from ONNX, time `execute_async_v3` on the GPU.

One code path for TensorRT 8.6 to 11.x (see shared TENSORRT.md): `build_serialized_network` with
memory pools and a persistent timing cache, named tensor addresses and `execute_async_v3`.
Precision comes from the ONNX graph's own types: the network is created STRONGLY_TYPED where that
flag exists (10.0+; on 11.x there is no other way, `BuilderFlag.FP16` is gone), and on 8.x, or for
an fp32 graph asked to run in fp16 on 10.x, the builder's FP16 flag is set instead.

Every name whose presence depends on the TensorRT major version is listed in `VERSIONED_NAMES`
and only touched behind `_has(obj, "NAME")` (or `getattr` with a default). `TRT_NAMES_USED`
lists every TensorRT attribute this module touches; tests/test_trt_api_surface.py checks both
against the names extracted from the real bindings of 8.6.1, 10.3, 10.13 and 11.4.

Buffers are torch CUDA tensors and timing uses torch CUDA events on a torch stream; tensorrt and
torch are imported inside functions only.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import BackendUnavailableError, InvalidConfigError, UnsupportedLayerError
from ..config import Precision
from ..fingerprint import DeviceFingerprint
from ._nvidia import cuda_event_sampler, driver_version, jetson_power_mode
from .base import Runtime

__all__ = [
    "TensorRTRuntime",
    "TrtBuildOptions",
    "EngineBuildError",
    "build_engine",
    "engine_info",
    "default_timing_cache_path",
    "trt_version",
    "MIN_VERSION",
    "VERSIONED_NAMES",
    "TRT_NAMES_USED",
]

_log = logging.getLogger("locp_trt.tensorrt")

#: Oldest TensorRT this module is written and API-checked for (JetPack 6.0 ships 8.6).
MIN_VERSION = (8, 6)

#: TensorRT names used here that exist only on some major versions: name -> (first major,
#: last major or None for "still present"). Each is touched only behind `_has(...)`.
VERSIONED_NAMES: dict[str, tuple[int, int | None]] = {
    # NetworkDefinitionCreationFlag.EXPLICIT_BATCH: required on 8.x, the default (deprecated) on
    # 10.x, removed in 11.
    "EXPLICIT_BATCH": (8, 10),
    # NetworkDefinitionCreationFlag.STRONGLY_TYPED: new in 10.0.
    "STRONGLY_TYPED": (10, None),
    # BuilderFlag.FP16: removed in 11 (precision comes from the network's types there).
    "FP16": (8, 10),
    # IBuilderConfig.avg_timing_iterations: a Python property from 10.0 on.
    "avg_timing_iterations": (10, None),
}

#: Every attribute this module reads or writes on `tensorrt` and its objects.
TRT_NAMES_USED: frozenset[str] = frozenset({
    # module, classes, enums
    "__version__", "Builder", "Runtime", "OnnxParser", "ILogger", "Severity", "ERROR",
    "INTERNAL_ERROR", "WARNING", "INFO", "NetworkDefinitionCreationFlag", "BuilderFlag",
    "MemoryPoolType", "WORKSPACE", "GPU_FALLBACK", "DeviceType", "DLA", "ProfilingVerbosity",
    "DETAILED", "TensorIOMode", "INPUT", "name",
    *VERSIONED_NAMES,
    # builder, network, parser
    "create_network", "create_builder_config", "build_serialized_network", "num_DLA_cores",
    "parse", "num_errors", "get_error",
    # builder config
    "set_memory_pool_limit", "builder_optimization_level", "create_timing_cache",
    "set_timing_cache", "get_timing_cache", "serialize", "set_flag", "default_device_type",
    "DLA_core", "profiling_verbosity",
    # runtime, engine, context
    "deserialize_cuda_engine", "create_execution_context", "num_io_tensors", "get_tensor_name",
    "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype", "set_input_shape",
    "set_tensor_address", "execute_async_v3", "num_layers",
})


class EngineBuildError(UnsupportedLayerError):
    """TensorRT could not parse the ONNX graph or build an engine from it."""


# ---- version helpers -----------------------------------------------------------------------
def _has(obj: Any, name: str) -> bool:
    """Whether this TensorRT version's `obj` has `name` (gate for every VERSIONED_NAMES entry)."""
    return hasattr(obj, name)


def _import_trt():
    import tensorrt as trt

    return trt


def trt_version(trt: Any = None) -> tuple[int, int]:
    """(major, minor) of the importable TensorRT."""
    trt = trt or _import_trt()
    m = re.match(r"(\d+)\.(\d+)", str(trt.__version__))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


# ---- options ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrtBuildOptions:
    """How engines are built. Sizes in MiB."""

    # Builder scratch memory limit (MemoryPoolType.WORKSPACE).
    workspace_mib: int = 1024
    # 0..5; 3 is TensorRT's default. Higher searches more tactics and builds slower.
    optimization_level: int = 3
    # Tactic timing repeats (avg_timing_iterations, TensorRT >= 10 only; None: TensorRT's default).
    timing_iterations: int | None = None
    # Reuse tactic timings across builds (a large speed-up when profiling many layers).
    use_timing_cache: bool = True
    # Where the timing cache lives; None: default_timing_cache_path() for this TRT and GPU.
    timing_cache_path: Path | None = None
    # Jetson DLA core to build for (None: the GPU), and whether unsupported layers may fall back.
    dla_core: int | None = None
    gpu_fallback: bool = True

    def __post_init__(self) -> None:
        if self.workspace_mib < 1:
            raise InvalidConfigError(f"workspace_mib must be >= 1, got {self.workspace_mib}")
        if not 0 <= self.optimization_level <= 5:
            raise InvalidConfigError(f"optimization_level must be 0..5, got {self.optimization_level}")
        if self.dla_core is not None and self.dla_core < 0:
            raise InvalidConfigError(f"dla_core must be >= 0, got {self.dla_core}")


def default_timing_cache_path(version: str = "", device: str = "") -> Path:
    """~/.cache/locp_trt/trt_timing[-<version>-<device>].cache ($XDG_CACHE_HOME honoured).

    Tactic timings are only valid for one TensorRT version on one GPU model, so both are part of
    the file name.
    """
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "locp_trt"
    tag = "-".join(re.sub(r"[^A-Za-z0-9.]+", "_", s).strip("_") for s in (version, device) if s)
    return base / (f"trt_timing-{tag}.cache" if tag else "trt_timing.cache")


# ---- logger -----------------------------------------------------------------------------------
_LOGGER = None


def _logger(trt):
    """The process-wide TensorRT logger: forwards to `logging` and keeps recent errors for messages.

    TensorRT wants one logger per process (a second one triggers a warning and is ignored).
    """
    global _LOGGER
    if _LOGGER is not None:
        return _LOGGER

    sev = trt.ILogger.Severity

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:  # called by TensorRT
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(str(msg))
                del self.errors[:-20]
                _log.error("TensorRT: %s", msg)
            elif severity == sev.WARNING:
                _log.warning("TensorRT: %s", msg)
            elif severity == sev.INFO:
                _log.debug("TensorRT: %s", msg)

    _LOGGER = _Logger()
    return _LOGGER


# ---- engine building ---------------------------------------------------------------------------
def _onnx_carries_fp16(onnx_bytes: bytes) -> bool:
    """Whether the ONNX graph has fp16 inputs or weights (then a strongly typed build runs fp16)."""
    import onnx

    try:
        model = onnx.load_from_string(onnx_bytes)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise EngineBuildError(f"not a readable ONNX model ({len(onnx_bytes)} bytes): {exc}") from exc
    half = onnx.TensorProto.FLOAT16
    g = model.graph
    return any(i.type.tensor_type.elem_type == half for i in g.input) or any(
        t.data_type == half for t in g.initializer
    )


def _gpu_name() -> str:
    try:
        import torch

        return str(torch.cuda.get_device_name()) if torch.cuda.is_available() else ""
    except Exception:  # informative only
        return ""


def _network_flags(trt, strongly_typed: bool) -> int:
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if strongly_typed and _has(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    # EXPLICIT_BATCH is required on 8.x, the (deprecated) default on 10.x and gone in 11.
    if trt_version(trt)[0] < 10 and _has(creation, "EXPLICIT_BATCH"):
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    return flags


def _plan_precision(trt, onnx_bytes: bytes, precision: Precision) -> tuple[bool, bool]:
    """(strongly_typed, set_fp16_flag) for building `onnx_bytes` at `precision`."""
    can_type = _has(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    has_fp16_flag = _has(trt.BuilderFlag, "FP16")
    if precision is Precision.FP32:
        return can_type, False
    if can_type and _onnx_carries_fp16(onnx_bytes):
        return True, False
    if has_fp16_flag:  # 8.x, or an fp32 graph on 10.x: let the builder pick fp16 kernels
        return False, True
    raise InvalidConfigError(
        f"TensorRT {trt.__version__} builds precision from the ONNX graph's types, and this graph "
        "has no fp16 tensors; export it in fp16 (locp_trt.deploy.export.onnx_bytes_from_module(..., "
        "Precision.FP16)) or time it in fp32"
    )


def _load_timing_cache(config, path: Path):
    data = b""
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            _log.warning("cannot read TensorRT timing cache %s (%s); starting empty", path, exc)
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        _log.warning("TensorRT timing cache %s does not match this TensorRT/GPU; starting empty", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(config, path: Path) -> None:
    try:
        blob = bytes(config.get_timing_cache().serialize())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        Path(tmp).write_bytes(blob)
        os.replace(tmp, path)  # atomic: parallel profilers never read half a cache
    except OSError as exc:
        _log.warning("cannot write TensorRT timing cache %s: %s", path, exc)


def build_engine(onnx_bytes: bytes, precision: Precision, options: TrtBuildOptions | None = None) -> bytes:
    """Serialized TensorRT engine ("plan") for an ONNX model, at `precision`.

    Raises:
        EngineBuildError: the parser rejected the graph or the builder failed (message carries
            TensorRT's own errors).
        InvalidConfigError: fp16 asked of an fp32 graph on a TensorRT without `BuilderFlag.FP16`.
    """
    trt = _import_trt()
    options = options or TrtBuildOptions()
    precision = Precision.parse(precision)
    logger = _logger(trt)
    logger.errors.clear()
    strongly_typed, fp16_flag = _plan_precision(trt, onnx_bytes, precision)

    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = ([str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
                  or ["the parser reported no detail"])
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not parse the ONNX graph ({len(onnx_bytes)} bytes): "
            + "; ".join(errors)
            + ". Check the model with onnx.checker, or re-export with another opset"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    config.builder_optimization_level = int(options.optimization_level)
    if options.timing_iterations is not None and _has(config, "avg_timing_iterations"):
        config.avg_timing_iterations = int(options.timing_iterations)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if fp16_flag and _has(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)
    if options.dla_core is not None:
        if options.dla_core >= builder.num_DLA_cores:
            raise BackendUnavailableError(
                f"DLA core {options.dla_core} asked, but this device has {builder.num_DLA_cores} "
                "DLA cores; drop --dla-core or pick one below that count"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options.dla_core)
        if options.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    cache_path = None
    if options.use_timing_cache:
        cache_path = options.timing_cache_path or default_timing_cache_path(str(trt.__version__), _gpu_name())
        _load_timing_cache(config, cache_path)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not build an engine ({precision.value}"
            f"{', strongly typed' if strongly_typed else ''}): "
            + ("; ".join(logger.errors) or "no error was logged")
            + f". Try a larger workspace (now {options.workspace_mib} MiB) or fp32"
        )
    if cache_path is not None:
        _save_timing_cache(config, cache_path)
    return bytes(serialized)


def engine_info(precision: Precision, options: TrtBuildOptions | None = None,
                engine: bytes | None = None, onnx_bytes: bytes | None = None) -> dict:
    """What an engine was built with, for a side file next to it (JSON-able).

    Includes the TensorRT version, GPU, driver, precision and build options. With `onnx_bytes`
    (the graph the engine was built from), also how precision was applied (strongly typed network
    or the FP16 builder flag); with `engine`, also its I/O tensors and layer count.
    """
    trt = _import_trt()
    options = options or TrtBuildOptions()
    precision = Precision.parse(precision)
    info: dict[str, Any] = {
        "tensorrt": str(trt.__version__),
        "gpu": _gpu_name(),
        "driver": driver_version(),
        "precision": precision.value,
        "workspace_mib": options.workspace_mib,
        "optimization_level": options.optimization_level,
        "dla_core": options.dla_core,
        "gpu_fallback": options.gpu_fallback if options.dla_core is not None else None,
        "power_mode": jetson_power_mode(),
    }
    if onnx_bytes is not None:
        strongly_typed, fp16_flag = _plan_precision(trt, onnx_bytes, precision)
        info["strongly_typed"] = strongly_typed
        info["builder_flags"] = (["FP16"] if fp16_flag else []) + (
            ["GPU_FALLBACK"] if options.dla_core is not None and options.gpu_fallback else [])
    if engine is not None:
        runtime = trt.Runtime(_logger(trt))
        eng = runtime.deserialize_cuda_engine(engine)
        if eng is None:
            raise EngineBuildError(f"TensorRT {trt.__version__} could not deserialize the engine "
                                   f"({len(engine)} bytes); was it built by another TensorRT version?")
        info["num_layers"] = int(eng.num_layers)
        info["io_tensors"] = [
            {"name": n, "mode": eng.get_tensor_mode(n).name, "shape": list(eng.get_tensor_shape(n)),
             "dtype": eng.get_tensor_dtype(n).name}
            for n in (eng.get_tensor_name(i) for i in range(eng.num_io_tensors))
        ]
        del eng  # before its runtime
    return info


# ---- running --------------------------------------------------------------------------------
_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
                 "UINT8": "uint8", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def _torch_dtype(trt_dtype) -> Any:
    import torch

    name = trt_dtype.name  # by name: BF16 / INT64 exist only on newer TensorRT
    if name not in _TORCH_DTYPES:
        raise UnsupportedLayerError(f"engine tensor of TensorRT type {name} cannot be timed here")
    return getattr(torch, _TORCH_DTYPES[name])


class _EngineRunner:
    """An engine, its context, torch buffers bound by name, and a CUDA graph of one enqueue."""

    def __init__(self, trt, engine_bytes: bytes, input_shape: tuple[int, ...], device_index: int,
                 dla_core: int | None) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda", device_index)
        # Kept on self: a TensorRT runtime must outlive its engines, and an engine its contexts
        # (`close` releases them in that order).
        self.runtime = trt.Runtime(_logger(trt))
        if dla_core is not None:
            self.runtime.DLA_core = int(dla_core)
        self.graph = None
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise EngineBuildError(f"TensorRT {trt.__version__} could not deserialize the engine it built")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise InvalidConfigError(
                f"the engine has {len(inputs)} inputs ({', '.join(inputs)}); latency timing feeds exactly one"
            )
        if not self.context.set_input_shape(inputs[0], tuple(int(d) for d in input_shape)):
            raise InvalidConfigError(
                f"input_shape {tuple(input_shape)} does not fit the engine input {inputs[0]!r} of shape "
                f"{tuple(self.engine.get_tensor_shape(inputs[0]))}"
            )
        self.buffers = {}
        with torch.cuda.device(self.device):
            for n in names:
                dtype = _torch_dtype(self.engine.get_tensor_dtype(n))
                shape = tuple(int(d) for d in self.context.get_tensor_shape(n))
                if n in inputs and dtype.is_floating_point:
                    buf = torch.randn(shape, dtype=dtype, device=self.device)
                else:
                    buf = torch.zeros(shape, dtype=dtype, device=self.device)
                if not self.context.set_tensor_address(n, buf.data_ptr()):
                    raise EngineBuildError(f"TensorRT refused the device address of tensor {n!r}")
                self.buffers[n] = buf
            self.stream = torch.cuda.Stream(device=self.device)

    def close(self) -> None:
        """Release the graph, context, buffers, engine and runtime, dependants first."""
        self.stream.synchronize()
        for attr in ("graph", "context", "buffers", "engine", "runtime"):
            setattr(self, attr, None)

    def launch(self) -> None:
        """Enqueue one inference on the runner's stream."""
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EngineBuildError("TensorRT execute_async_v3 failed; see the TensorRT errors logged above")

    def capture(self) -> str | None:
        """Capture one enqueue as a CUDA graph; None on success, else why it was not possible."""
        torch = self.torch
        with torch.cuda.device(self.device):
            for _ in range(3):  # TensorRT defers some set-up to the first enqueues
                self.launch()
            self.stream.synchronize()
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    self.launch()
            except Exception as exc:
                torch.cuda.synchronize(self.device)
                return f"{type(exc).__name__}: {exc}"
        self.graph = graph
        return None

    def sampler(self, replays: int) -> Callable[[int, int], list[float]]:
        run = self.graph.replay if self.graph is not None else self.launch
        return cuda_event_sampler(run, replays, stream=self.stream, device=self.device)


class TensorRTRuntime(Runtime):
    """TensorRT engines built from ONNX, timed on one GPU (or a Jetson DLA core).

    Per sample, a CUDA graph of one `execute_async_v3` is replayed `bench.graph_replays` times
    between two CUDA events (plain enqueues when capture is refused, e.g. on DLA).
    """

    name = "tensorrt"
    precisions = (Precision.FP32, Precision.FP16)
    # Tactics are timed at build time; a shared timing cache pins them across builds.
    build_variance = True

    def settings(self) -> dict:
        o = self.options
        return {"workspace_mib": o.workspace_mib, "builder_optimization_level": o.optimization_level,
                "timing_iterations": o.timing_iterations, "timing_cache": (
                    str(o.timing_cache_path) if o.timing_cache_path else "default per TensorRT and GPU")
                if o.use_timing_cache else None, "dla_core": o.dla_core}

    def __init__(self, bench=None, *, strict: bool = False, options: TrtBuildOptions | None = None,
                 device_index: int = 0) -> None:
        super().__init__(bench, strict=strict)
        self.options = options or TrtBuildOptions()
        self.device_index = int(device_index)
        self.last_extra: dict = {}
        self._runner: _EngineRunner | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            trt = _import_trt()
        except Exception:  # ImportError, or OSError when libnvinfer is missing
            return ("tensorrt is not importable: install TensorRT (JetPack on Jetson, or pip install "
                    "tensorrt from NVIDIA's index)")
        if trt_version(trt) < MIN_VERSION:
            return (f"TensorRT {trt.__version__} is older than {MIN_VERSION[0]}.{MIN_VERSION[1]}, the "
                    "oldest version locp_trt supports: upgrade TensorRT (JetPack 6 or later on Jetson)")
        try:
            import torch
        except ImportError:
            return "the tensorrt runtime uses torch CUDA tensors and events: pip install torch (a CUDA build)"
        if not torch.cuda.is_available():
            return (f"the tensorrt runtime needs torch with CUDA for buffers and timing; torch "
                    f"{torch.__version__} sees no GPU: install a CUDA build of torch")
        return None

    @property
    def label(self) -> str:
        where = f"DLA {self.options.dla_core}" if self.options.dla_core is not None else f"cuda:{self.device_index}"
        return f"{self.name} ({where})"

    def fingerprint(self, precision: Precision) -> DeviceFingerprint:
        import torch

        trt = _import_trt()
        provider = "tensorrt" if self.options.dla_core is None else f"tensorrt-dla{self.options.dla_core}"
        return DeviceFingerprint(
            device=str(torch.cuda.get_device_name(self.device_index)), runtime=self.name,
            runtime_version=str(trt.__version__), precision=Precision.parse(precision).value,
            driver=driver_version(self.device_index), provider=provider,
            libraries={"tensorrt": str(trt.__version__), "cuda": str(torch.version.cuda)},
            power_mode=jetson_power_mode(),
        )

    def time_onnx(self, onnx_bytes, input_shape, precision):
        try:
            timing = super().time_onnx(onnx_bytes, input_shape, precision)
        finally:
            self.close()
        timing.extra.update(self.last_extra)
        return timing

    def close(self) -> None:
        """Release the engine of the last measurement (if one is still held)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

    def _prepare_onnx_impl(
        self, onnx_bytes: bytes, input_shape: tuple[int, ...], precision: Precision
    ) -> Callable[[int, int], list[float]]:
        import torch

        trt = _import_trt()
        self.close()
        # TensorRT builds and deserializes on the current CUDA device.
        with torch.cuda.device(self.device_index):
            engine = build_engine(onnx_bytes, precision, self.options)
            runner = self._runner = _EngineRunner(trt, engine, input_shape, self.device_index,
                                                  self.options.dla_core)
            why = "DLA engines cannot be captured" if self.options.dla_core is not None else runner.capture()
        self.last_extra = {"cuda_graph": why is None, "tensorrt": str(trt.__version__)}
        if why is not None:
            self.last_extra["note"] = f"CUDA graph capture not used ({why}); timed plain enqueues"
        return runner.sampler(max(1, int(self.bench.graph_replays)))
