"""End-to-end timing of one model file (.pt, .onnx or TensorRT .engine) on one runtime.

- `.pt` (state_dict + arch, checkpoint, pruned model from optimize, trusted pickled module):
  torch runtimes time the module itself; ONNX Runtime and TensorRT time its ONNX export (made in
  memory at the asked precision).
- `.onnx`: ONNX Runtime or TensorRT. Batch and precision come from the file's input; a symbolic
  batch dimension is fixed to `batch` first.
- `.engine`: TensorRT only (engines run only with the TensorRT version and GPU that built them).

Every result carries the device fingerprint, so rows from different machines are never confused.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, InvalidConfigError, ModelLoadError
from ..latency.config import Precision
from ..latency.timing import BenchConfig, Timing

__all__ = ["ModelFormat", "BenchResult", "Interleaved", "bench_file", "bench_files", "model_format",
           "onnx_input_info"]


class ModelFormat(str, enum.Enum):
    """What kind of model file is timed."""

    TORCH = "torch"  # .pt / .pth / .pth.tar
    ONNX = "onnx"
    ENGINE = "engine"  # serialized TensorRT engine


_SUFFIXES = {".pt": ModelFormat.TORCH, ".pth": ModelFormat.TORCH, ".tar": ModelFormat.TORCH,
             ".pt2": ModelFormat.TORCH, ".onnx": ModelFormat.ONNX, ".engine": ModelFormat.ENGINE, ".plan": ModelFormat.ENGINE,
             ".trt": ModelFormat.ENGINE}
#: `runtime="auto"` per format: the first available of these.
_AUTO = {ModelFormat.TORCH: ("tensorrt", "onnxruntime-cuda", "torch", "onnxruntime"),
         ModelFormat.ONNX: ("tensorrt", "onnxruntime-cuda", "onnxruntime"),
         ModelFormat.ENGINE: ("tensorrt",)}
_TORCH_RUNTIMES = ("torch", "torch-cpu")


@dataclass(frozen=True)
class BenchResult:
    """One model file timed end to end. Units: µs (timing), FLOPs = 2 x multiply-accumulates."""

    path: str
    format: ModelFormat
    runtime: str  # registry name, e.g. "onnxruntime"
    runtime_label: str  # with provider / device, e.g. "onnxruntime (CPUExecutionProvider)"
    precision: Precision
    input_shape: tuple[int, ...]  # full input shape, batch first
    timing: Timing
    fingerprint: dict
    params: int | None = None  # .pt: graph.count_params (BatchNorm affine included); .onnx: float
    # initializer elements, where the exporter has folded BatchNorm into conv weights and biases
    flops: int | None = None  # conv/linear FLOPs of one batch, where a torch model is available
    arch: str | None = None
    note: str = ""

    @property
    def batch(self) -> int:
        return int(self.input_shape[0])

    def row(self) -> dict[str, Any]:
        """One flat JSON row: file, runtime, timing summary (µs), throughput and device fields."""
        t = self.timing.summary()
        med = self.timing.median_us
        fp = dict(self.fingerprint)
        libs = fp.pop("libraries", {}) or {}
        settings = fp.pop("settings", {}) or {}
        row: dict[str, Any] = {
            "path": self.path, "format": self.format.value, "arch": self.arch,
            "runtime": self.runtime, "runtime_label": self.runtime_label,
            "precision": self.precision.value, "batch": self.batch,
            "input_shape": "x".join(str(v) for v in self.input_shape),
            **t,
            "median_ms": round(med / 1000.0, 6),
            "throughput_per_s": round(self.batch * 1e6 / med, 3) if med > 0 else None,
            "params": self.params, "flops": self.flops,
        }
        row.update({f"fp_{k}": v for k, v in fp.items()})
        row.update({f"lib_{k}": v for k, v in libs.items()})
        row.update({f"setting_{k}": v for k, v in settings.items()})
        from ..latency.fingerprint import DeviceFingerprint

        try:
            row["fingerprint_key"] = DeviceFingerprint.from_dict(self.fingerprint).key()
        except TypeError:
            row["fingerprint_key"] = None
        if self.note:
            row["note"] = self.note
        return row


def model_format(path: str | Path) -> ModelFormat:
    """The format of a model file, from its extension."""
    p = Path(path)
    fmt = _SUFFIXES.get(p.suffix.lower())
    if fmt is None and not p.exists():
        raise InvalidConfigError(f"{p} does not exist; pass a model file (.pt, .onnx, .engine) or the --out "
                                 "folder of an optimize run")
    if fmt is None:
        raise InvalidConfigError(
            f"cannot tell the model format of {p} from its extension {p.suffix or '(none)'!r}; use "
            ".pt/.pth (PyTorch), .onnx, or .engine/.plan (TensorRT)")
    return fmt


def _pick_runtime(fmt: ModelFormat, name: str) -> str:
    from ..latency.runtimes import runtime_class

    key = name.strip().lower()
    if key != "auto":
        canonical = runtime_class(key).name  # unknown names raise with the valid ones
        if fmt is ModelFormat.ENGINE and canonical != "tensorrt":
            raise InvalidConfigError(f"a TensorRT engine runs only under --runtime tensorrt, not {name!r}")
        if fmt is ModelFormat.ONNX and canonical in _TORCH_RUNTIMES:
            raise InvalidConfigError(
                f"runtime {name!r} times torch modules, not ONNX files; use --runtime onnxruntime, "
                "onnxruntime-cuda or tensorrt for .onnx (or bench the .pt)")
        return canonical
    if fmt is ModelFormat.ENGINE:
        return "tensorrt"  # its availability is checked with the engine's own message
    reasons = []
    for cand in _AUTO[fmt]:
        reason = runtime_class(cand).unavailable_reason()
        if reason is None:
            return cand
        reasons.append(f"{cand}: {reason}")
    raise BackendUnavailableError(f"no runtime can time a {fmt.value} model here ({'; '.join(reasons)})")


def _make_runtime(name: str, bench_cfg: BenchConfig, fmt: ModelFormat, path: Path):
    from ..latency.runtimes import get_runtime, runtime_class

    if fmt is ModelFormat.ENGINE:
        reason = runtime_class("tensorrt").unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(
                f"cannot time the TensorRT engine {path} here: {reason}; run bench on the machine that "
                "built the engine, or bench the .onnx file with --runtime onnxruntime")
    # `bench FILE` runs in a process that holds only the files it times, so ONNX Runtime builds
    # them here rather than in a child process (its builds outlive this runtime object)
    isolate = {"isolate": False} if name in ("onnxruntime", "onnxruntime-cuda") else {}
    return get_runtime(name, bench_cfg, **isolate)


# ---- ONNX ---------------------------------------------------------------------------------------
def onnx_input_info(onnx_bytes: bytes, source: str = "ONNX model") -> tuple[str, list[int | str], Precision, int]:
    """(input name, dims (ints, or the symbolic names), precision, parameter count) of a one-input ONNX model."""
    import numpy as np
    import onnx
    from onnx import TensorProto

    try:
        model = onnx.load_model_from_string(onnx_bytes)
    except Exception as e:  # noqa: BLE001 - protobuf raises its own types
        raise ModelLoadError(f"{source} is not a readable ONNX model ({type(e).__name__}: {e})") from None
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InvalidConfigError(
            f"{source} has {len(inputs)} inputs ({', '.join(i.name for i in inputs) or 'none'}); bench "
            "feeds exactly one image tensor")
    vi = inputs[0]
    elem = vi.type.tensor_type.elem_type
    if elem == TensorProto.FLOAT16:
        precision = Precision.FP16
    elif elem == TensorProto.FLOAT:
        precision = Precision.FP32
    else:
        raise InvalidConfigError(f"{source}: input {vi.name!r} has element type "
                                 f"{TensorProto.DataType.Name(elem)}; bench feeds float32 or float16")
    dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                             for d in vi.type.tensor_type.shape.dim]
    params = int(sum(int(np.prod(i.dims)) if len(i.dims) else 1 for i in model.graph.initializer
                     if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)))
    return vi.name, dims, precision, params


def _fix_batch(onnx_bytes: bytes, batch: int) -> bytes:
    """The model with its input's symbolic batch dimension set to `batch`."""
    import onnx

    model = onnx.load_model_from_string(onnx_bytes)
    inits = {i.name for i in model.graph.initializer}
    vi = next(i for i in model.graph.input if i.name not in inits)
    dim = vi.type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = int(batch)
    return model.SerializeToString()


def _onnx_shape(dims: list[int | str], batch: int | None, source: str) -> tuple[tuple[int, ...], bool]:
    """(input shape, batch was symbolic)."""
    if not dims:
        raise InvalidConfigError(f"{source}: the input has no shape; export it with a fixed input shape")
    symbolic = [i for i, d in enumerate(dims) if not isinstance(d, int) or d <= 0]
    if any(i != 0 for i in symbolic):
        raise InvalidConfigError(
            f"{source}: input dimensions {dims} are symbolic beyond the batch; export it with a fixed "
            "C, H, W")
    if symbolic:
        return (int(batch or 1), *(int(d) for d in dims[1:])), True
    shape = tuple(int(d) for d in dims)
    if batch is not None and batch != shape[0]:
        raise InvalidConfigError(
            f"{source} has a fixed batch of {shape[0]}, not --batch {batch}; export it again with that "
            "batch (or with a dynamic batch)")
    return shape, False


# ---- TensorRT engines ------------------------------------------------------------------------------
def _engine_input(trt, engine_bytes: bytes, source: str) -> tuple[tuple[int, ...], Precision]:
    from ..latency.runtimes.tensorrt_rt import _logger

    runtime = trt.Runtime(_logger(trt))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise ModelLoadError(
            f"TensorRT {trt.__version__} cannot deserialize {source}; engines load only with the TensorRT "
            "version and GPU model that built them: rebuild it from the ONNX file here")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    if len(inputs) != 1:
        raise InvalidConfigError(f"{source} has {len(inputs)} inputs; bench feeds exactly one")
    shape = tuple(int(d) for d in engine.get_tensor_shape(inputs[0]))
    dtype = engine.get_tensor_dtype(inputs[0]).name
    precision = Precision.FP16 if dtype == "HALF" else Precision.FP32
    del engine, runtime
    return shape, precision


def _time_engine(rt, engine_bytes: bytes, batch: int | None, source: str) -> tuple[Timing, tuple[int, ...], Precision]:
    """Deserialize and time an engine with the TensorRT runtime's runner (CUDA graph when possible)."""
    import torch

    from ..latency.runtimes.tensorrt_rt import _EngineRunner, _import_trt

    trt = _import_trt()
    shape, precision = _engine_input(trt, engine_bytes, source)
    if shape and shape[0] < 0:
        shape = (int(batch or 1), *shape[1:])
    elif batch is not None and shape and batch != shape[0]:
        raise InvalidConfigError(f"{source} was built for batch {shape[0]}, not --batch {batch}")
    if any(d < 0 for d in shape):
        raise InvalidConfigError(f"{source}: input shape {shape} is dynamic beyond the batch; build a "
                                 "fixed-shape engine")
    with torch.cuda.device(rt.device_index):
        runner = _EngineRunner(trt, engine_bytes, shape, rt.device_index, rt.options.dla_core)
        try:
            why = "DLA engines cannot be captured" if rt.options.dla_core is not None else runner.capture()
            # The runtime's shared bookkeeping: warm-up, sampling, re-measuring noisy attempts.
            timing = rt._measure(runner.sampler(max(1, int(rt.bench.graph_replays))))
        finally:
            runner.close()
    timing.extra.update({"cuda_graph": why is None, **({"note": why} if why else {})})
    return timing, shape, precision


def _engine_side_precision(path: Path) -> Precision | None:
    """The precision recorded in `<engine>.json` (written by export.build_trt_engine), if any."""
    import json

    side = path.with_name(path.name + ".json")
    try:
        return Precision.parse(json.loads(side.read_text(encoding="utf-8"))["precision"])
    except (OSError, ValueError, KeyError, TypeError, InvalidConfigError):
        return None


# ---- torch -------------------------------------------------------------------------------------------
def _torch_counts(module, input_shape: tuple[int, ...], batch: int, precision: Precision) -> tuple[int, int | None, str]:
    """(parameters, conv/linear FLOPs of one batch or None, note)."""
    from ..errors import LocpError
    from ..prune.graph import build_graph, count_params

    params = count_params(module)
    try:
        flops = build_graph(module, input_shape, batch=batch, precision=precision).flops()
        return params, int(flops), ""
    except (LocpError, RuntimeError) as e:  # e.g. a layer kind the graph tracer refuses
        return params, None, f"FLOPs not counted: {e}"


# ---- the entry points ----------------------------------------------------------------------------
@dataclass
class _Prepared:
    """A model file built on its runtime, ready to sample; `timing` is set once it is timed."""

    path: Path
    fmt: ModelFormat
    runtime: str
    label: str
    precision: Precision
    shape: tuple[int, ...]
    fingerprint: dict
    sample: Any = None  # sample(warmup, iters) -> µs list; None for engines (timed at once)
    measure: Any = None  # the runtime's warm-up / re-measure bookkeeping, for one file alone
    timing: Timing | None = None
    params: int | None = None
    flops: int | None = None
    arch: str | None = None
    note: str = ""

    def result(self) -> BenchResult:
        timing = self.timing
        assert timing is not None
        note = self.note
        if timing.extra.get("note"):
            note = "; ".join(s for s in (note, str(timing.extra["note"])) if s)
        if not timing.samples_us or not all(math.isfinite(v) for v in timing.samples_us):
            raise InvalidConfigError(f"timing {self.path} on {self.label} gave no usable samples")
        return BenchResult(path=str(self.path), format=self.fmt, runtime=self.runtime,
                           runtime_label=self.label, precision=self.precision,
                           input_shape=tuple(int(v) for v in self.shape), timing=timing,
                           fingerprint=self.fingerprint, params=self.params, flops=self.flops,
                           arch=self.arch, note=note)


def _prepare(path: str | Path, runtime: str, precision: Precision | str | None, batch: int | None,
             bench_cfg: BenchConfig, arch: str | None, trust_pickle: bool,
             input_shape: Sequence[int] | None) -> _Prepared:
    """Load and build one file on its runtime (a TensorRT engine is timed here already)."""
    p = Path(path)
    fmt = model_format(p)
    if batch is not None and int(batch) < 1:
        raise InvalidConfigError(f"batch must be >= 1, got {batch}")
    name = _pick_runtime(fmt, runtime)
    if not p.is_file():
        raise ModelLoadError(f"model file not found: {p}")
    asked = Precision.parse(precision) if precision is not None else None
    with _make_runtime(name, bench_cfg, fmt, p) as rt:
        if fmt is ModelFormat.TORCH:
            from ..prune.loading import load_model

            loaded = load_model(p, arch=arch, trust_pickle=trust_pickle,
                                input_shape=tuple(input_shape) if input_shape is not None else None)
            if loaded.input_shape is None:
                raise InvalidConfigError(f"the input shape of {p} is unknown; pass --input-shape C,H,W")
            prec = asked or Precision.FP32
            n = int(batch or 1)
            shape = (n, *loaded.input_shape)
            rt.check_precision(prec)
            params, flops, note = _torch_counts(loaded.module, tuple(loaded.input_shape), n, prec)
            # torch runtimes time the module; the others time its ONNX export (Runtime.builder).
            out = _Prepared(p, fmt, name, rt.label, prec, shape, rt.fingerprint(prec).to_dict(),
                            sample=rt.prepare_module(loaded.module, shape, prec), measure=rt._measure,
                            params=params, flops=flops, arch=loaded.arch, note=note)
        elif fmt is ModelFormat.ONNX:
            data = p.read_bytes()
            _, dims, file_prec, params = onnx_input_info(data, str(p))
            shape, symbolic = _onnx_shape(dims, batch, str(p))
            if symbolic:
                data = _fix_batch(data, shape[0])
            prec = asked or file_prec
            if asked is not None and asked is not file_prec and name != "tensorrt":
                raise InvalidConfigError(
                    f"{p} is a {file_prec.value} graph; {name} runs it as such, so --precision "
                    f"{asked.value} cannot apply (only TensorRT can run an fp32 graph in fp16)")
            out = _Prepared(p, fmt, name, rt.label, prec, shape, rt.fingerprint(prec).to_dict(),
                            sample=rt.onnx_builder(data, shape, prec)(), measure=rt._measure,
                            params=params)
        else:
            timing, shape, prec = _time_engine(rt, p.read_bytes(), batch, str(p))
            note = ""
            built = _engine_side_precision(p)
            if built is not None:  # an fp32-input engine may run fp16 inside: the build says
                prec = built
            if asked is not None and asked is not prec:
                note = f"--precision {asked.value} ignored: the engine was built {prec.value}"
            out = _Prepared(p, fmt, name, rt.label, prec, shape, rt.fingerprint(prec).to_dict(),
                            timing=timing, note=note)
    return out


def bench_file(
    path: str | Path,
    *,
    runtime: str = "auto",
    precision: Precision | str | None = None,
    batch: int | None = None,
    bench_cfg: BenchConfig | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
    input_shape: Sequence[int] | None = None,
) -> BenchResult:
    """Time one model file end to end.

    Args:
        path: .pt / .pth (PyTorch), .onnx, or .engine / .plan (TensorRT).
        runtime: registry name, or "auto" (the best available for the format).
        precision: for .pt, the precision to run at (default fp32); for .onnx and .engine the
            file decides (an fp32 ONNX graph may be asked to run fp16 under TensorRT).
        batch: batch size for .pt (default 1) and for a symbolic ONNX/engine batch dimension; a
            file with a fixed batch must match it.
        bench_cfg: warm-up, iterations, spread limit, CPU threads.
        arch: zoo name or module:callable for a state_dict / checkpoint .pt.
        trust_pickle: allow a pickled nn.Module .pt (runs code from the file).
        input_shape: one sample's (C, H, W) for a .pt whose architecture does not say.

    Raises:
        InvalidConfigError: unknown extension, runtime that cannot run the format, shape mismatch.
        BackendUnavailableError: the runtime (e.g. TensorRT for an engine) is missing here.
        ModelLoadError: the file cannot be read.
    """
    prep = _prepare(path, runtime, precision, batch, bench_cfg or BenchConfig(), arch, trust_pickle,
                    input_shape)
    if prep.timing is None:
        prep.timing = prep.measure(prep.sample)
    return prep.result()


@dataclass(frozen=True)
class Interleaved:
    """Several files timed in interleaved rounds: each file's result, and each file's speedup
    over the first one (`latency.compare`'s interval on the round ratios), None for the first."""

    results: tuple[BenchResult, ...]
    speedups: tuple[Any, ...]  # Comparison | None per file


def bench_files(paths: Sequence[str | Path], *, archs: Sequence[str | None] | None = None,
                rule: Any = None, **kwargs: Any) -> Interleaved:
    """Time two or more files interleaved (rounds of A B C, then C B A, ...), as optimize compares
    models, so that a drift of a shared machine hits all alike; a TensorRT engine is timed on its
    own (its runner lives only while it is timed) and says so in its note.

    `archs`: each file's --arch (None: `arch` for all). Other keyword arguments are
    `bench_file`'s (runtime, precision, batch, bench_cfg, arch, ...).
    """
    import numpy as np

    from ..latency.compare import CompareRule, _interval, _verdict
    from ..latency.compare import Comparison as _Comparison

    rule = rule or CompareRule()
    bench_cfg = kwargs.pop("bench_cfg", None) or BenchConfig()
    archs = list(archs) if archs is not None else [kwargs.get("arch")] * len(paths)
    preps = [_prepare(p, kwargs.get("runtime", "auto"), kwargs.get("precision"), kwargs.get("batch"),
                      bench_cfg, a, kwargs.get("trust_pickle", False), kwargs.get("input_shape"))
             for p, a in zip(paths, archs)]
    live = [q for q in preps if q.timing is None]
    samples: dict[int, list[float]] = {id(q): [] for q in live}
    medians: dict[int, list[float]] = {id(q): [] for q in live}
    # --iters samples per file in all, spread over the rounds (about 5 a round, 3 to 12 rounds)
    iters = int(bench_cfg.iters)
    rounds = min(iters, max(rule.min_rounds, min(rule.max_rounds, iters // 5)))
    per_round = [iters // rounds + (1 if r < iters % rounds else 0) for r in range(rounds)]
    for q in live:
        q.sample(bench_cfg.warmup, 1)
    for r in range(rounds):
        for q in (live if r % 2 == 0 else live[::-1]):
            got = q.sample(rule.warmup if r else 0, per_round[r])
            samples[id(q)].extend(got)
            medians[id(q)].append(float(np.median(got)))
    for q in live:
        q.timing = Timing.from_samples(samples[id(q)], max_rel_spread=bench_cfg.max_rel_spread)
    for q in preps:
        if q.fmt is ModelFormat.ENGINE and len(preps) > 1:
            q.note = "; ".join(s for s in (q.note, "timed on its own, not interleaved") if s)
    speedups: list[Any] = [None]
    first = preps[0]
    for q in preps[1:]:
        if first.timing is None or id(first) not in medians or id(q) not in medians:
            speedups.append(None)
            continue
        a, b = medians[id(first)], medians[id(q)]
        logs = [float(np.log(x / y)) for x, y in zip(a, b)]
        est, low, high = _interval(logs, rule.confidence)
        speedups.append(_Comparison(est, low, high, len(logs), tuple(a), tuple(b), rule.confidence,
                                    None, _verdict(low, high, None)))
    return Interleaved(tuple(q.result() for q in preps), tuple(speedups))
