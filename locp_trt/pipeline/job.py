"""One optimize job as one typed record (`OptimizeJob`), resolved once from the user's words.

`resolve_job` is where strings become objects: the device profile (`DeviceProfile`), the
precision (`Precision`), the runtime (a `Runtime` instance, checked for the precision), the
method's enums, paths. The CLI and `locp_trt.optimize` both call it; every stage below takes the
typed record as it is and parses nothing again.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..deploy.devices import DeviceProfile
from ..errors import InvalidConfigError
from ..latency.config import Precision
from ..latency.runtimes.base import Runtime
from ..latency.timing import BenchConfig
from ..method.config import OptimizeConfig

__all__ = ["Training", "Target", "OptimizeJob", "resolve_job", "sample_shape", "MODULE_SOURCE"]

#: `OptimizeJob.model`'s source name for a module given in Python (not a file).
MODULE_SOURCE = "module"


@dataclass(frozen=True, kw_only=True)
class Training:
    """Data and fine-tuning between steps (used only when the job has data)."""

    train_limit: int | None = None  # training images used per epoch (None: all)
    test_limit: int | None = None
    batch_size: int = 128
    epochs: float | None = None  # fine-tune epochs after each step (None: 1, or the example's 2)
    final_epochs: float | None = None  # once at the end (None: 2, or the example's 4)
    lr: float = 0.01
    val_fraction: float = 0.1  # of the training split held out for decisions (the test split only reports)
    distill: bool = True  # distil from the unpruned model in every fine-tune
    distill_alpha: float = 0.7  # weight of the soft-target term: (1 - a) CE + a T^2 KL
    distill_temperature: float = 4.0
    device: str = "auto"  # where fine-tuning runs: auto | cpu | cuda | cuda:N


@dataclass(frozen=True)
class Target:
    """One target of a run: a speedup over the unpruned model, or an end-to-end latency."""

    speedup: float | None = None
    latency_ms: float | None = None

    @property
    def label(self) -> str:
        """'1.5x' or '2.5ms': the member's folder name in a family."""
        return f"{self.speedup:g}x" if self.speedup is not None else f"{self.latency_ms:g}ms"

    def config(self, method: OptimizeConfig) -> OptimizeConfig:
        """`method` aiming at this target (checked as any target is)."""
        return replace(method, speedup=self.speedup, target_latency_ms=self.latency_ms)

    @property
    def order(self) -> float:
        """Sorts a family from the least to the most pruned."""
        return self.speedup if self.speedup is not None else -self.latency_ms


@dataclass(frozen=True, kw_only=True)
class OptimizeJob:
    """Everything one optimize run needs, typed (`resolve_job` builds it)."""

    # ---- the model
    model: Any  # a path, "example", or an nn.Module given in Python
    input_shape: tuple[int, ...] | None = None  # one sample (C, H, W) when the model does not say
    arch: str | None = None  # zoo name or module:callable, for state_dicts
    trust_pickle: bool = False
    # ---- where and how latency is measured
    device: DeviceProfile
    runtime: Runtime | None  # None: the lookup table alone (every decision predicted)
    # measured elsewhere (`profile`); layers are looked up there. Two or more: one plan for all of
    # those devices (`latency.joint`: the worst device decides)
    latency_tables: tuple[Path, ...] = ()
    store: Any = None  # a LatencyStore, its Path, or None (in memory only)
    meter: Any = None  # a LatencyMeter the caller keeps (its counts); then its runtime and store
    # ---- data and fine-tuning (data None: no fine-tuning and no accuracy)
    data: Any = None  # a data spec ("mnist:PATH", ...) or `train.data.Loaders`
    training: Training = field(default_factory=Training)
    # ---- the loop (its precision and batch are the ones measured)
    method: OptimizeConfig
    # ---- the output folder
    out: Path
    resume: bool = False
    force: bool = False
    engine: bool = True  # build a TensorRT engine where the profile deploys with TensorRT
    export: bool = True  # write pruned.pt, plan.json, model.onnx, runtime.json and the plots
    progress: bool = True
    # ---- a family: two or more targets, one output folder each (`pipeline.family`); `method`
    # then aims at the first, and each member's config is `Target.config(method)`
    family: tuple[Target, ...] = ()
    # ---- a run over several processes (torchrun): this one's `train.distributed.DistContext`,
    # set by `api.optimize` once the process group is joined; None: alone
    dist: Any = None

    @property
    def latency_table(self) -> Path | None:
        """The one lookup table of a single-device run (None: none, or several)."""
        return self.latency_tables[0] if len(self.latency_tables) == 1 else None

    @property
    def source(self) -> str:
        """How reports name the model: its path, "example", or "module"."""
        return self.model if isinstance(self.model, str) else MODULE_SOURCE


_METHOD = {f.name for f in fields(OptimizeConfig)} - {"precision", "batch", "finetune", "final_finetune"}
_TRAINING = {f.name for f in fields(Training)} - {"device"} | {"train_device"}
_JOB = {"input_shape", "arch", "trust_pickle", "latency_table", "store", "meter", "resume", "force",
        "engine", "export", "progress", "precision", "batch", "bench"}
#: Options that were removed, with what to do instead.
_REMOVED = {"search": "the knapsack ladder (search='knapsack') was removed by measurement (docs/METHOD.md "
                      "§4) and every step lands on the greedy path; drop search="}


def resolve_job(model: Any, *, out: str | Path, device: str | DeviceProfile = "auto",
                runtime: str | Runtime | None = None, data: Any = None, **options: Any) -> OptimizeJob:
    """The typed job for `model`, from the user's words (the only place they are parsed).

    Args:
        model: a path, "example", or an nn.Module.
        out: the output folder.
        device: a device profile or its name ("cpu", "desktop", "jetson", "auto").
        runtime: a runtime name ("onnxruntime", "torch", "auto", ...) or instance; None: the
            profile's first available one (none with only a `latency_table`).
        data: a data spec or `Loaders`; None: no fine-tuning.
        **options: `OptimizeConfig` fields (speedup, steps, importance, ...), `Training`
            fields (epochs, lr, ...; `train_device` for its device), and `precision`, `batch`,
            `bench`, `latency_table`, `store`, `meter` (a `LatencyMeter` to measure through: its
            runtime and store), `input_shape`, `arch`, `trust_pickle`, `resume`, `force`, `engine`,
            `export`, `progress`.
    """
    from ..deploy.devices import resolve_device

    unknown = sorted(set(options) - _METHOD - _TRAINING - _JOB)
    removed = [k for k in unknown if k in _REMOVED]
    if removed:
        raise InvalidConfigError(f"option {removed[0]!r} was removed: {_REMOVED[removed[0]]}")
    if unknown:
        valid = sorted(_METHOD | _TRAINING | _JOB)
        close = difflib.get_close_matches(unknown[0], valid, n=3)
        raise InvalidConfigError(f"unknown option {unknown[0]!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                                   else f"; valid: {', '.join(valid)}"))
    profile = resolve_device(device)
    precision = options.pop("precision", None)
    precision = profile.precision if precision is None else Precision.coerce(precision)
    batch = int(options.pop("batch", None) or profile.batch)
    tables = _paths(options.pop("latency_table", None))
    if runtime is None and options.get("meter") is not None:
        runtime = options["meter"].runtime
    if len(tables) > 1 and runtime not in (None, ""):
        raise InvalidConfigError(
            f"--runtime {getattr(runtime, 'name', runtime)} with {len(tables)} lookup tables: a plan for several "
            "devices takes every layer from their tables, and each device whose runtime runs here is "
            "measured at the end by itself; drop --runtime")
    rt = _runtime(runtime, profile, options.pop("bench", None), tables, precision)
    targets = _targets(options)
    method = OptimizeConfig(**_method_options({k: options.pop(k) for k in list(options) if k in _METHOD}),
                            precision=precision, batch=batch)
    if len(targets) > 1:
        for t in targets:  # each member's target is checked before anything runs
            t.config(method)
        if options.get("resume"):
            raise InvalidConfigError("--resume continues one run, not a family; rerun the family with --force, "
                                     "or resume a member's folder with its own target")
    family = targets if len(targets) > 1 else ()
    training = {k: options.pop(k) for k in list(options) if k in _TRAINING}
    if "train_device" in training:
        training["device"] = training.pop("train_device")
    shape = options.pop("input_shape", None)
    return OptimizeJob(model=str(model) if isinstance(model, Path) else model,
                       input_shape=tuple(int(v) for v in shape) if shape is not None else None,
                       device=profile, runtime=rt, latency_tables=tables, data=data,
                       training=Training(**training), method=method, out=Path(out), family=family, **options)


def _paths(given: Any) -> tuple[Path, ...]:
    """The lookup tables: none, one path, or a sequence of paths."""
    if given is None:
        return ()
    if isinstance(given, (str, Path)):
        return (Path(given),)
    paths = tuple(Path(p) for p in given)
    if len(set(paths)) != len(paths):
        raise InvalidConfigError(f"a lookup table is given twice: {[str(p) for p in paths]}")
    return paths


def _targets(options: dict[str, Any]) -> tuple[Target, ...]:
    """The run's targets from `speedup` / `target_latency_ms` (a number or a sequence of them),
    least pruned first; a single one stays in `options` as a number."""
    for key, make in (("speedup", lambda v: Target(speedup=v)), ("target_latency_ms", lambda v: Target(latency_ms=v))):
        value = options.get(key)
        if value is None or isinstance(value, (int, float)):
            continue
        if isinstance(value, str) or not isinstance(value, Sequence) or not value:
            raise InvalidConfigError(f"{key} must be a number or a list of numbers, got {value!r}")
        try:
            numbers = [float(v) for v in value]
        except (TypeError, ValueError):
            raise InvalidConfigError(f"{key} must be a number or a list of numbers, got {value!r}") from None
        if len(set(numbers)) != len(numbers):
            raise InvalidConfigError(f"{key} lists a target twice: {numbers}; give each once")
        targets = tuple(sorted((make(v) for v in numbers), key=lambda t: t.order))
        options[key] = numbers[0] if len(numbers) == 1 else (targets[0].speedup if key == "speedup"
                                                                else targets[0].latency_ms)
        return targets
    return ()


def _method_options(given: dict[str, Any]) -> dict[str, Any]:
    """OptimizeConfig keywords with the enums' names parsed."""
    from ..method.candidates import DiscoveryMethod
    from ..prune.importance import Importance

    parse = {"discovery": DiscoveryMethod, "importance": Importance.parse}
    return {k: (parse[k](v) if k in parse and isinstance(v, str) else v) for k, v in given.items()}


def _runtime(runtime: str | Runtime | None, profile: DeviceProfile, bench: BenchConfig | None,
             tables: tuple[Path, ...], precision: Precision) -> Runtime | None:
    """The runtime instance measuring the job, checked for `precision` (None: the table alone)."""
    from ..deploy.devices import runtime_for
    from ..latency.runtimes import get_runtime

    if runtime is None or runtime == "":
        if tables:
            return None
        runtime = runtime_for(profile)
    if isinstance(runtime, str):
        runtime = get_runtime(runtime, bench)
    runtime.check_precision(precision)
    return runtime


def sample_shape(example_input: Any) -> tuple[int, ...] | None:
    """One sample's shape from an example input: a tensor (batch first) or a (C, H, W) shape."""
    if example_input is None:
        return None
    shape = getattr(example_input, "shape", None)
    if shape is not None:
        return tuple(int(v) for v in shape[1:])
    if isinstance(example_input, Sequence) and all(isinstance(v, int) for v in example_input):
        return tuple(example_input)
    raise InvalidConfigError(f"example_input must be a tensor (batch first) or a (C, H, W) shape, "
                             f"got {type(example_input).__name__}")
