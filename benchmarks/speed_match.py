"""Bring a baseline to a *measured* speedup: search its pruning knob on interleaved timings.

Torch-Pruning's ratio, uniform pruning's removed fraction and a knapsack's latency budget are
knobs whose effect on real latency is not known in advance: on the latency stairs a ratio that
removes half the FLOPs may save a third of the time, nothing, or make the model slower (odd
widths), and a larger ratio is not always faster (Torch-Pruning leaves a group whole when
rounding would take it under its floor). So `match_speedup` does not assume monotonicity:

1. the first guess (from a FLOPs model) is measured; within `tol` of the target, that is all;
2. otherwise a coarse grid of knobs up to `hi` is measured (`grid=0`: no grid; while every
   probe is short of the target, the next knob is extrapolated in log speedup from the two
   largest knobs, up to `hi`: fewer probes where each one costs a model build on a GPU);
3. among neighbouring knobs (knob 0 is the unpruned model, speedup 1) whose speedups straddle
   the target, the smallest-knob pair (the least pruning that reaches the speed) is refined by
   alternating interpolation in log speedup and bisection, until within `tol` or out of probes;
   when no pair straddles it, the knobs next to the fastest one are probed closer, in case the
   grid stepped over a narrow peak.

The probe closest to the target in log speedup is returned (the smallest knob among those within
`tol`), with every probe made.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SpeedProbe", "SpeedMatch", "match_speedup"]


@dataclass(frozen=True)
class SpeedProbe:
    """One knob tried and the speedup measured for it."""

    knob: float
    speedup: float


@dataclass(frozen=True)
class SpeedMatch:
    """Where the search ended: the chosen probe, whether it is within tolerance, every probe."""

    target: float
    best: SpeedProbe
    within_tol: bool
    probes: tuple[SpeedProbe, ...]

    @property
    def rel_error(self) -> float:
        return self.best.speedup / self.target - 1.0

    def to_json(self) -> dict:
        return {"target": round(self.target, 4), "knob": round(self.best.knob, 5),
                "speedup": round(self.best.speedup, 4), "rel_error": round(self.rel_error, 4),
                "within_tol": self.within_tol,
                "probes": [[round(p.knob, 5), round(p.speedup, 4)] for p in self.probes]}


def _interpolate(a: SpeedProbe, b: SpeedProbe, target: float) -> float:
    la, lb, lt = math.log(a.speedup), math.log(b.speedup), math.log(target)
    if lb == la:
        return 0.5 * (a.knob + b.knob)
    return a.knob + (lt - la) * (b.knob - a.knob) / (lb - la)


def match_speedup(measure: Callable[[float], float], target: float, *, guess: float, hi: float,
                  tol: float = 0.03, grid: int = 6, max_probes: int = 14) -> SpeedMatch:
    """Search knob in (0, hi] for a measured speedup within `tol` (relative) of `target`.

    Args:
        measure: knob -> measured speedup over the unpruned model (> 0).
        target: the speedup wanted (> 1).
        guess: first knob to try (e.g. from a FLOPs model).
        hi: largest knob allowed.
        tol: accept |speedup / target - 1| <= tol.
        grid: knobs of the coarse scan (evenly spaced up to `hi`); 0 steps out from the guess.
        max_probes: measurements at most.
    """
    if not target > 1:
        raise ValueError(f"target speedup must be > 1, got {target}")
    if not hi > 0:
        raise ValueError(f"hi must be > 0, got {hi}")
    seen: dict[float, SpeedProbe] = {}
    order: list[SpeedProbe] = []

    def probe(k: float) -> SpeedProbe:
        key = round(min(max(k, 1e-4), hi), 6)
        if key not in seen:
            seen[key] = SpeedProbe(key, float(measure(key)))
            order.append(seen[key])
        return seen[key]

    def close(p: SpeedProbe) -> bool:
        return abs(p.speedup / target - 1.0) <= tol

    def done() -> bool:
        return any(close(p) for p in order) or len(order) >= max_probes

    probe(guess)
    for i in range(1, grid + 1):
        if done():
            break
        probe(hi * i / grid)
    closer = 0  # rounds of looking closer around the fastest knob
    for step in range(max_probes):
        if done():
            break
        pts = [SpeedProbe(0.0, 1.0), *sorted(seen.values(), key=lambda p: p.knob)]
        brackets = [(a, b) for a, b in zip(pts, pts[1:])
                    if (a.speedup - target) * (b.speedup - target) < 0 and b.knob - a.knob > 1e-4]
        if not brackets and grid == 0 and pts[-1].knob < hi - 1e-6:
            # step out: extrapolate through the two largest knobs (or halve the way to hi when
            # the last one gained nothing)
            a, b = pts[-2], pts[-1]
            k = _interpolate(a, b, target) if b.speedup > a.speedup else 0.5 * (b.knob + hi)
            k = min(hi, max(k, b.knob + 0.05 * hi))
            probe(k)
            continue
        if not brackets:  # nothing measured reaches the target: look closer around the fastest
            top = max(range(1, len(pts)), key=lambda i: pts[i].speedup)
            around = [0.5 * (pts[j].knob + pts[top].knob) for j in (top - 1, top + 1) if 0 <= j < len(pts)]
            fresh = [k for k in around if round(k, 6) not in seen][:max_probes - len(order)]
            if not fresh or pts[top].speedup < 1 or closer >= 2:
                break
            closer += 1
            for k in fresh:
                probe(k)
            continue
        a, b = brackets[0]
        k = _interpolate(a, b, target) if step % 2 == 0 else 0.5 * (a.knob + b.knob)
        k = min(max(k, a.knob + 0.05 * (b.knob - a.knob)), b.knob - 0.05 * (b.knob - a.knob))
        if round(k, 6) in seen:
            break
        probe(k)
    lt = math.log(target)
    within = [p for p in order if close(p)]
    best = (min(within, key=lambda p: p.knob) if within
            else min(order, key=lambda p: abs(math.log(p.speedup) - lt)))
    return SpeedMatch(target, best, bool(within), tuple(order))
