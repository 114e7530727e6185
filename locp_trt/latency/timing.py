"""Timing statistics and the benchmark settings every runtime shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BenchConfig", "Timing"]


@dataclass(frozen=True)
class BenchConfig:
    """How to time one runnable model. Units: iterations and microseconds."""

    # Untimed runs before sampling: lets autotuners, caches and clocks settle.
    warmup: int = 10
    # Timed samples per attempt; the median of these is the latency.
    iters: int = 50
    # An attempt whose IQR / median exceeds this is repeated (up to `max_attempts`).
    max_rel_spread: float = 0.15
    max_attempts: int = 3
    # CPU threads for CPU runtimes; 1 keeps stairs sharp and results stable on shared machines.
    threads: int = 1
    # GPU timing: replay a captured CUDA graph `graph_replays` times per sample (torch, TRT).
    graph_replays: int = 1


@dataclass(frozen=True)
class Timing:
    """Per-iteration samples (µs) and their robust summary."""

    samples_us: tuple[float, ...]
    attempts: int = 1
    stable: bool = True
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_samples(cls, samples_us, attempts: int = 1, max_rel_spread: float | None = None) -> Timing:
        """Build from raw samples; `stable` says whether IQR/median is within `max_rel_spread`."""
        s = tuple(float(v) for v in samples_us)
        t = cls(samples_us=s, attempts=attempts)
        if max_rel_spread is not None:
            object.__setattr__(t, "stable", t.rel_spread <= max_rel_spread)
        return t

    def _q(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.samples_us), q)) if self.samples_us else float("nan")

    @property
    def median_us(self) -> float:
        return self._q(50)

    @property
    def p10_us(self) -> float:
        return self._q(10)

    @property
    def p90_us(self) -> float:
        return self._q(90)

    @property
    def iqr_us(self) -> float:
        return self._q(75) - self._q(25)

    @property
    def min_us(self) -> float:
        return min(self.samples_us) if self.samples_us else float("nan")

    @property
    def max_us(self) -> float:
        return max(self.samples_us) if self.samples_us else float("nan")

    @property
    def rel_spread(self) -> float:
        """IQR over median: the noise figure re-measurement is decided on."""
        m = self.median_us
        return self.iqr_us / m if m > 0 else float("inf")

    def summary(self) -> dict:
        """Flat dict for JSON rows (no raw samples)."""
        return {
            "median_us": round(self.median_us, 3),
            "p10_us": round(self.p10_us, 3),
            "p90_us": round(self.p90_us, 3),
            "iqr_us": round(self.iqr_us, 3),
            "min_us": round(self.min_us, 3),
            "max_us": round(self.max_us, 3),
            "n": len(self.samples_us),
            "attempts": self.attempts,
            "stable": self.stable,
        }
