"""One optimize job as one typed record (`OptimizeJob`), resolved once from the user's words.

`resolve_job` is where strings become objects: the device profile (`DeviceProfile`), the
precision (`Precision`), the runtime (a `Runtime` instance, checked for the precision), the
method's enums, paths. The CLI and `locp_trt.optimize` both call it; every stage below takes the
typed record as it is and parses nothing again.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..deploy.devices import DeviceProfile
from ..errors import InvalidConfigError
from ..latency.config import Precision
from ..latency.runtimes.base import Runtime
from ..latency.timing import BenchConfig
from ..method.config import OptimizeConfig

__all__ = ["Training", "OptimizeJob", "resolve_job", "sample_shape", "MODULE_SOURCE"]

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
    latency_table: Path | None = None  # measured elsewhere (`profile`); layers are looked up there
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

    @property
    def source(self) -> str:
        """How reports name the model: its path, "example", or "module"."""
        return self.model if isinstance(self.model, str) else MODULE_SOURCE


_METHOD = {f.name for f in fields(OptimizeConfig)} - {"precision", "batch", "finetune", "final_finetune"}
_TRAINING = {f.name for f in fields(Training)} - {"device"} | {"train_device"}
_JOB = {"input_shape", "arch", "trust_pickle", "latency_table", "store", "meter", "resume", "force",
        "engine", "export", "progress", "precision", "batch", "bench"}


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
        **options: `OptimizeConfig` fields (speedup, steps, importance, search, ...), `Training`
            fields (epochs, lr, ...; `train_device` for its device), and `precision`, `batch`,
            `bench`, `latency_table`, `store`, `meter` (a `LatencyMeter` to measure through: its
            runtime and store), `input_shape`, `arch`, `trust_pickle`, `resume`, `force`, `engine`,
            `export`, `progress`.
    """
    from ..deploy.devices import resolve_device

    unknown = sorted(set(options) - _METHOD - _TRAINING - _JOB)
    if unknown:
        valid = sorted(_METHOD | _TRAINING | _JOB)
        close = difflib.get_close_matches(unknown[0], valid, n=3)
        raise InvalidConfigError(f"unknown option {unknown[0]!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                                   else f"; valid: {', '.join(valid)}"))
    profile = resolve_device(device)
    precision = options.pop("precision", None)
    precision = profile.precision if precision is None else Precision.coerce(precision)
    batch = int(options.pop("batch", None) or profile.batch)
    table = options.pop("latency_table", None)
    table = Path(table) if table is not None else None
    if runtime is None and options.get("meter") is not None:
        runtime = options["meter"].runtime
    rt = _runtime(runtime, profile, options.pop("bench", None), table, precision)
    method = OptimizeConfig(**_method_options({k: options.pop(k) for k in list(options) if k in _METHOD}),
                            precision=precision, batch=batch)
    training = {k: options.pop(k) for k in list(options) if k in _TRAINING}
    if "train_device" in training:
        training["device"] = training.pop("train_device")
    shape = options.pop("input_shape", None)
    return OptimizeJob(model=str(model) if isinstance(model, Path) else model,
                       input_shape=tuple(int(v) for v in shape) if shape is not None else None,
                       device=profile, runtime=rt, latency_table=table, data=data,
                       training=Training(**training), method=method, out=Path(out), **options)


def _method_options(given: dict[str, Any]) -> dict[str, Any]:
    """OptimizeConfig keywords with the enums' names parsed."""
    from ..method.candidates import DiscoveryMethod
    from ..method.ladder import SearchMethod
    from ..prune.importance import Importance

    parse = {"discovery": DiscoveryMethod, "search": SearchMethod, "importance": Importance.parse}
    return {k: (parse[k](v) if k in parse and isinstance(v, str) else v) for k, v in given.items()}


def _runtime(runtime: str | Runtime | None, profile: DeviceProfile, bench: BenchConfig | None,
             table: Path | None, precision: Precision) -> Runtime | None:
    """The runtime instance measuring the job, checked for `precision` (None: the table alone)."""
    from ..deploy.devices import runtime_for
    from ..latency.runtimes import get_runtime

    if runtime is None or runtime == "":
        if table is not None:
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
