"""Runtimes, layer-latency accounting and interleaved end-to-end timing for the benchmarks.

Every variant of one comparison is timed in one process with the same runtime and settings,
interleaved (A, B, C, ..., then the reverse order, ...) for a few rounds, so slow drifts of the
machine (clocks, other load) fall on all variants alike. A variant's latency is the median of its
round medians; its spread is the 10th and 90th percentile of all its samples pooled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from locp_trt.latency.config import LayerConfig, Precision
from locp_trt.latency.meter import LatencyMeter
from locp_trt.latency.runtimes import Runtime, get_runtime
from locp_trt.latency.store import LatencyStore
from locp_trt.latency.timing import BenchConfig, Timing

__all__ = ["BudgetExceeded", "Budget", "Runtimes", "make_runtimes", "MeteredRuntime", "CountedLatency",
           "meter_counts", "ModelTimer", "interleaved", "interleaved_builds"]

#: Runtimes that time torch modules directly (no ONNX export).
_TORCH_RUNTIMES = ("torch", "torch-cpu")


class BudgetExceeded(Exception):  # noqa: N818 - a signal, not an error of the user's
    """Raised inside a decision when the run's time budget is spent."""


class Budget:
    """Wall-clock budget of the whole run, in s (None: unlimited)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        """Seconds left (inf when unlimited)."""
        return float("inf") if self.seconds is None else self.seconds - self.elapsed()

    def deadline(self, within_s: float | None = None) -> float | None:
        """Monotonic time by which work must stop: the budget's end, or sooner."""
        ends = []
        if self.seconds is not None:
            ends.append(self.start + self.seconds)
        if within_s is not None:
            ends.append(time.monotonic() + within_s)
        return min(ends) if ends else None


@dataclass(frozen=True)
class Runtimes:
    """One runtime for layer configs (few iterations) and one for whole models (more)."""

    layer: Runtime
    model: Runtime

    @property
    def name(self) -> str:
        return self.model.name

    def describe(self, precision: Precision) -> str:
        """The device line (fingerprint) for `precision`."""
        return self.model.fingerprint(precision).describe()


def make_runtimes(name: str, *, threads: int = 1, layer_iters: int = 20, model_iters: int = 50,
                  warmup: int = 5) -> Runtimes:
    """The layer and model runtimes of `name` (e.g. "onnxruntime", "torch").

    Layer configs take many measurements, so they get fewer iterations; a CUDA-graph replay per
    sample makes each GPU sample cheap.
    """
    layer = BenchConfig(warmup=warmup, iters=layer_iters, threads=threads, max_attempts=2)
    model = BenchConfig(warmup=max(warmup, 5), iters=model_iters, threads=threads, max_attempts=2)
    return Runtimes(get_runtime(name, layer), get_runtime(name, model))


class MeteredRuntime:
    """A runtime as a decision sees it: layer measurements and whole-model builds stop with
    `BudgetExceeded` once `deadline` (monotonic s) has passed, and every build is counted, with the time
    its samples took (`models`, `model_s`). Everything else is the runtime's own."""

    def __init__(self, runtime: Runtime, deadline: float | None = None) -> None:
        self._runtime, self.deadline = runtime, deadline
        self.models, self.model_s = 0, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    def time_layer(self, cfg: LayerConfig) -> Timing:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise BudgetExceeded("time budget spent while measuring layer latencies")
        return self._runtime.time_layer(cfg)

    def _timed(self, sampler: Callable[[int, int], list[float]]) -> Callable[[int, int], list[float]]:
        self.models += 1

        def timed(warmup: int, iters: int) -> list[float]:
            t0 = time.perf_counter()
            out = sampler(warmup, iters)
            self.model_s += time.perf_counter() - t0
            return out

        return timed

    def _check(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise BudgetExceeded("time budget spent before building a whole model")

    def prepare_module(self, module: Any, shape: Sequence[int], precision: Precision):
        self._check()
        return self._timed(self._runtime.prepare_module(module, shape, precision))

    def builder(self, module: Any, shape: Sequence[int], precision: Precision):
        build = self._runtime.builder(module, shape, precision)

        def fresh():
            self._check()
            return self._timed(build())

        return fresh


class CountedLatency:
    """`latency_us` of a fresh meter over a shared store, with its cost accounted.

    One instance per decision, so its `stats` are that decision's alone: distinct configs asked
    (the lookup table it needs), requests, configs timed now, and the wall time spent timing them.
    Raises `BudgetExceeded` once `deadline` (monotonic s) has passed.
    """

    def __init__(self, runtime: Runtime, store: LatencyStore, deadline: float | None = None,
                 progress: bool = False) -> None:
        self.meter = LatencyMeter(runtime, store, progress=progress)
        self.deadline = deadline
        self.measure_s = 0.0

    def __call__(self, cfg: LayerConfig) -> float:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise BudgetExceeded("time budget spent while measuring layer latencies")
        before = self.meter.stats.measured
        t0 = time.perf_counter()
        value = self.meter.latency_us(cfg)
        if self.meter.stats.measured > before:
            self.measure_s += time.perf_counter() - t0
        return value

    def counts(self) -> dict[str, Any]:
        return meter_counts(self.meter)


def meter_counts(meter: LatencyMeter) -> dict[str, Any]:
    """What a meter's decision cost: distinct configs asked, requests, configs timed now (and
    their wall time), store hits."""
    s = meter.stats
    return {"layer_configs": s.unique, "layer_requests": s.requested,
            "layer_measured": s.measured, "store_hits": s.store_hits,
            "measure_s": round(s.measure_s, 3),
            "s_per_measurement": (round(s.measure_s / s.measured, 5) if s.measured else None)}


class ModelTimer:
    """Times one model repeatedly: an ONNX runtime gets the model exported once; a torch
    runtime times the module itself (BatchNorm folded, as the runtime does)."""

    def __init__(self, runtime: Runtime, module: Any, shape: tuple[int, ...], precision: Precision) -> None:
        self.runtime, self.shape, self.precision = runtime, tuple(shape), precision
        self.module = module
        self.onnx: bytes | None = None
        if runtime.name not in _TORCH_RUNTIMES:
            from locp_trt.deploy.export import onnx_bytes_from_module

            self.onnx = onnx_bytes_from_module(module, self.shape, precision)

    def __call__(self) -> Timing:
        if self.onnx is not None:
            return self.runtime.time_onnx(self.onnx, self.shape, self.precision)
        return self.runtime.time_module(self.module, self.shape, self.precision)


def _summarise(timings: Sequence[Timing]) -> dict[str, Any]:
    medians = [t.median_us for t in timings]
    pooled = np.concatenate([np.asarray(t.samples_us, dtype=np.float64) for t in timings])
    return {"median_us": round(float(np.median(medians)), 3),
            "p10_us": round(float(np.percentile(pooled, 10)), 3),
            "p90_us": round(float(np.percentile(pooled, 90)), 3),
            "round_medians_us": [round(m, 3) for m in medians],
            "n": int(pooled.size), "stable": all(t.stable for t in timings)}


def interleaved(timers: Mapping[str, Callable[[], Timing]], rounds: int = 3,
                deadline: float | None = None, log: Callable[[str], None] | None = None
                ) -> dict[str, dict[str, Any]]:
    """Time every variant once per round, alternating the order each round.

    Returns variant -> {median_us (median of round medians), p10_us, p90_us (pooled samples),
    round_medians_us, n, stable}. Rounds after `deadline` are skipped (at least one always runs).
    """
    names = list(timers)
    got: dict[str, list[Timing]] = {n: [] for n in names}
    for r in range(max(1, rounds)):
        if r > 0 and deadline is not None and time.monotonic() > deadline:
            if log:
                log(f"  timing: budget spent, stopping after {r} round(s)")
            break
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            got[n].append(timers[n]())
        if log:
            log(f"  timing round {r + 1}/{rounds}: "
                + ", ".join(f"{n} {got[n][-1].median_us:.1f}" for n in names) + " µs")
    return {n: _summarise(ts) for n, ts in got.items()}


def interleaved_builds(builders: Mapping[str, Callable[[], Callable[[int, int], list[float]]]],
                       reference: str, *, builds: int = 1, rounds: int = 5, warmup: int = 3,
                       iters: int = 50, confidence: float = 0.90, deadline: float | None = None,
                       log: Callable[[str], None] | None = None,
                       after_build: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
    """Every variant built afresh `builds` times; per build, every sampler timed once per round,
    the order alternating each round; each variant's speedup over `reference` with an interval.

    `builders` map a variant to a factory of fresh builds (`Runtime.builder`). The speedup is the
    geometric mean of the round ratios (reference median / variant median); its interval at
    `confidence` is the wider of the between-build and the pooled-rounds Student-t intervals,
    as `latency.compare.compare_builds` judges. Rounds and builds after `deadline` are skipped
    (one round of the first build always runs).

    Returns variant -> {median_us (median of round medians), p10_us, p90_us (pooled samples),
    round_medians_us, builds, n, speedup, speedup_low, speedup_high, confidence}.
    """
    import math

    from locp_trt.latency.compare import _build_interval

    names = list(builders)
    if reference not in names:
        raise ValueError(f"reference {reference!r} is not among the variants")
    medians: dict[str, list[list[float]]] = {n: [] for n in names}
    samples: dict[str, list[float]] = {n: [] for n in names}
    for b in range(max(1, builds)):
        if b > 0 and deadline is not None and time.monotonic() > deadline:
            if log:
                log(f"  timing: budget spent, stopping after {b} build(s)")
            break
        samplers = {n: builders[n]() for n in (names if b % 2 == 0 else names[::-1])}
        for n in names:
            medians[n].append([])
        for r in range(max(1, rounds)):
            if r > 0 and deadline is not None and time.monotonic() > deadline:
                break
            for n in (names if (b + r) % 2 == 0 else names[::-1]):
                got = [float(v) for v in samplers[n](warmup, iters)]
                samples[n].extend(got)
                medians[n][-1].append(float(np.median(got)))
        if log:
            log(f"  timing build {b + 1}/{builds}: "
                + ", ".join(f"{n} {np.median(medians[n][-1]):.1f}" for n in names) + " µs")
        del samplers
        if after_build is not None:
            after_build()
    out: dict[str, dict[str, Any]] = {}
    ref = medians[reference]
    for n in names:
        logs = [[math.log(x / y) if x > 0 and y > 0 else 0.0 for x, y in zip(rb, vb)]
                for rb, vb in zip(ref, medians[n])]
        est, low, high = _build_interval(logs, confidence)
        pooled = np.asarray(samples[n], dtype=np.float64)
        flat = [m for bm in medians[n] for m in bm]
        out[n] = {"median_us": round(float(np.median(flat)), 3),
                  "p10_us": round(float(np.percentile(pooled, 10)), 3),
                  "p90_us": round(float(np.percentile(pooled, 90)), 3),
                  "round_medians_us": [[round(m, 3) for m in bm] for bm in medians[n]],
                  "builds": len(medians[n]), "n": int(pooled.size),
                  "speedup": round(est, 4), "speedup_low": round(low, 4),
                  "speedup_high": round(high, 4) if math.isfinite(high) else None,
                  "confidence": confidence}
    return out
