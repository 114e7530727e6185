"""The `Runtime` contract: turn a model into something runnable and time it honestly.

Backends override only the `_impl` hooks; the public methods here do the shared bookkeeping:
warm-up and sampling settings come from `BenchConfig`, noisy attempts are re-measured, and every
result carries the samples so callers can report median and spread.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from ...errors import UnstableMeasurementError
from ..compare import CompareRule, Sampler
from ..config import LayerConfig, Precision
from ..fingerprint import DeviceFingerprint
from ..timing import BenchConfig, Timing

if TYPE_CHECKING:  # torch is optional at import time
    import torch

__all__ = ["Runtime"]


class Runtime(abc.ABC):
    """One deployment runtime on one device.

    Use as a context manager (`with get_runtime("onnxruntime") as rt: rt.time_layer(cfg)`) so
    device resources are released; runtimes that hold none make that a no-op.
    """

    #: Registry name, e.g. "onnxruntime", "torch", "tensorrt".
    name: ClassVar[str] = ""
    #: Precisions this runtime can time.
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP32,)
    #: True where a fresh build of the same model can run at another speed (algorithms chosen or
    #: autotuned at build time, as on GPUs): a step's acceptance then pools several builds.
    build_variance: ClassVar[bool] = False

    def __init__(self, bench: BenchConfig | None = None, *, strict: bool = False) -> None:
        self.bench = bench or BenchConfig()
        # strict: raise UnstableMeasurementError instead of returning an unstable Timing.
        self.strict = strict

    # ---- availability ---------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def unavailable_reason(cls) -> str | None:
        """None when usable here; otherwise one line saying what is missing and how to install it."""

    # ---- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - a no-op default is intended
        """Release device resources (default: nothing held)."""

    # ---- identity ---------------------------------------------------------------------------
    @abc.abstractmethod
    def fingerprint(self, precision: Precision) -> DeviceFingerprint:
        """What this runtime runs on: the key measurements are shared under."""

    @property
    def label(self) -> str:
        """Human-readable name including the execution provider / device, for output lines."""
        return self.name

    # ---- timing -----------------------------------------------------------------------------
    def time_layer(self, cfg: LayerConfig) -> Timing:
        """Latency of one layer. Default: build its one-layer ONNX graph and time that."""
        from ..onnx_graph import build_layer_onnx

        self.check_precision(cfg.precision)
        return self.time_onnx(build_layer_onnx(cfg), cfg.input_shape, cfg.precision)

    def time_onnx(self, onnx_bytes: bytes, input_shape: Sequence[int], precision: Precision) -> Timing:
        """End-to-end latency of an ONNX model with one input of `input_shape`."""
        precision = self.check_precision(precision)
        sampler = self._prepare_onnx_impl(onnx_bytes, tuple(input_shape), precision)
        return self._measure(sampler)

    def time_module(self, module: torch.nn.Module, input_shape: Sequence[int], precision: Precision) -> Timing:
        """End-to-end latency of a torch module (built once by `prepare_module`)."""
        return self._measure(self.prepare_module(module, input_shape, precision))

    def prepare_module(self, module: torch.nn.Module, input_shape: Sequence[int],
                       precision: Precision) -> Sampler:
        """Build `module` once for repeated timing; returns `sample(warmup, iters) -> µs list`.

        What interleaved comparisons (`latency.compare`) time: each model is built once and its
        sampler called round after round. The module is not modified.
        """
        return self.builder(module, input_shape, precision)()

    def builder(self, module: torch.nn.Module, input_shape: Sequence[int],
                precision: Precision) -> Callable[[], Sampler]:
        """A factory of fresh builds of `module`: each call builds it anew (a new session or
        engine from the same ONNX bytes) and returns its sampler. Default: export to ONNX once."""
        from ..torch_onnx import onnx_bytes_from_module

        self.check_precision(precision)
        shape = tuple(int(v) for v in input_shape)
        return self.onnx_builder(onnx_bytes_from_module(module, shape, precision), shape, precision)

    def onnx_builder(self, onnx_bytes: bytes, input_shape: Sequence[int],
                     precision: Precision) -> Callable[[], Sampler]:
        """A factory of fresh builds of an ONNX model (e.g. an emitted model.onnx)."""
        precision = self.check_precision(precision)
        shape = tuple(int(v) for v in input_shape)
        if self._model_host() is not None:  # whole models are built and timed in a separate process
            return lambda: self._host_for_build().build(onnx_bytes, shape, precision)
        return lambda: self._prepare_onnx_impl(onnx_bytes, shape, precision)

    def _host_for_build(self):
        """The child process the next whole-model build goes to (see `spread_processes`)."""
        return self._model_host()

    @property
    def can_profile_nodes(self) -> bool:
        """Whether this runtime times each node inside a model (`profile_nodes`)."""
        return type(self).profile_nodes is not Runtime.profile_nodes

    def profile_nodes(self, onnx_bytes: bytes, input_shape: Sequence[int]) -> list:
        """Per-node kernel times inside a model, where the runtime has a profiler (ONNX Runtime)."""
        raise NotImplementedError(f"runtime {self.label!r} cannot profile the nodes inside a model")

    def _model_host(self):
        """The child process whole models are built in (`model_host.ModelHost`), or None to
        build them in this process (the default)."""
        return None

    #: Relative sd of a model pair's speedup between occasions (`CompareRule.occasion_sd`), from
    #: re-measurements of emitted models on this runtime; 0: none measured.
    OCCASION_SD = 0.0
    #: Slack within which a pooled comparison's build pair counts as timed in the machine's quiet
    #: state (`CompareRule.quiet`); 0: every build is judged (where builds differ for reasons of
    #: their own, as cuDNN's algorithm choice, a slow build is what a user may get).
    QUIET_SLACK = 0.0

    def pooled_rule(self, rule: CompareRule) -> CompareRule:
        """The comparison rule this runtime's verdicts need: how many fresh build pairs the final
        check, `bench` and the near-band probes pool, from how far its builds differ, the
        occasion term its intervals carry and the quiet-state slack (default: `rule` with
        `OCCASION_SD` and `QUIET_SLACK`)."""
        if self.OCCASION_SD > rule.occasion_sd:
            rule = replace(rule, occasion_sd=self.OCCASION_SD)
        if self.QUIET_SLACK > rule.quiet:
            rule = replace(rule, quiet=self.QUIET_SLACK)
        return rule

    def spread_processes(self, processes: int) -> contextlib.AbstractContextManager:
        """While active, the fresh build pairs of a pooled comparison (`compare_builds`: A then B,
        pair after pair) go to `processes` fresh processes in turn, where this runtime times whole
        models in child processes; a no-op elsewhere (default)."""
        return contextlib.nullcontext()

    @classmethod
    def options_from_settings(cls, settings: dict) -> dict:
        """Constructor keywords that rebuild with `settings` (as `settings()` wrote them)."""
        return {}

    def settings(self) -> dict:
        """The build settings that decide this runtime's speed, as JSON: recorded in the report
        and written beside the emitted model (`runtime.json`) so `bench` rebuilds it the same way."""
        return {}

    def check_precision(self, precision: Precision | str) -> Precision:
        """`precision` as a Precision; a clear error for one this runtime cannot time."""
        from ...errors import InvalidConfigError

        precision = Precision.coerce(precision)
        if precision not in self.precisions:
            raise InvalidConfigError(
                f"runtime {self.label!r} cannot time {precision.value}; it supports "
                f"{', '.join(p.value for p in self.precisions)}"
            )
        return precision

    # ---- backend hooks ------------------------------------------------------------------------
    @abc.abstractmethod
    def _prepare_onnx_impl(
        self, onnx_bytes: bytes, input_shape: tuple[int, ...], precision: Precision
    ) -> Callable[[int, int], list[float]]:
        """Build the model; return `sample(warmup, iters) -> per-iteration latencies in µs`."""

    # ---- shared bookkeeping -------------------------------------------------------------------
    def _measure(self, sample: Callable[[int, int], list[float]]) -> Timing:
        """Warm up once, sample, and re-measure while the spread exceeds the configured limit."""
        b = self.bench
        best: Timing | None = None
        for attempt in range(1, b.max_attempts + 1):
            samples = sample(b.warmup if attempt == 1 else max(1, b.warmup // 2), b.iters)
            t = Timing.from_samples(samples, attempts=attempt, max_rel_spread=b.max_rel_spread)
            if best is None or t.rel_spread < best.rel_spread:
                best = Timing.from_samples(t.samples_us, attempts=attempt, max_rel_spread=b.max_rel_spread)
            if t.stable:
                return Timing.from_samples(t.samples_us, attempts=attempt, max_rel_spread=b.max_rel_spread)
        assert best is not None
        if self.strict:
            raise UnstableMeasurementError(
                f"{self.label}: spread (IQR/median) stayed at {best.rel_spread:.0%} after "
                f"{b.max_attempts} attempts, above the {b.max_rel_spread:.0%} limit; close other "
                "programs using the device, raise --iters, or loosen --max-spread"
            )
        object.__setattr__(best, "attempts", b.max_attempts)
        return best
