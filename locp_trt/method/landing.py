"""How far along a decision path to go: the smallest prefix whose measured speedup reaches an aim.

A step's ladder (`prune.ladder`) is an ordered list of plans, each predicted faster than the one
before: prefixes of the greedy decision path. Prefix k has a predicted latency
`predicted_us[k]`; its real speedup is only known by measuring it. `land` finds the smallest k
whose measured speedup reaches `aim` with few measurements:

1. Before any prefix reaches the aim, it extrapolates from the measured points below the aim:
   latency against predicted latency along the secant of the last two points (the ratio model,
   latency proportional to the prediction, when only one point is known), and probes the first
   prefix predicted to reach the aim, or the end of the path.
2. Once the aim is bracketed (lo below, hi at or above), it interpolates latency linearly in the
   prediction between lo and hi, alternating with plain bisection so that a bent curve cannot
   stall it, until hi = lo + 1 or `max_probes` is spent.

A measured probe whose whole interval lies inside the band (the last step's) is taken at once,
and `stop` (the run's time budget) ends the search after any probe. Otherwise the result is the
measured prefix inside the band nearest the aim, from either side (a re-measurement moves a figure
a few percent either way, so the centre of the band is the safest place to stop), else hi (the
smallest prefix measured at or above the aim), or, when no prefix reached the aim, the fastest one
measured. Each probe is a comparison with its own statistical rule
(`latency.compare`); `land` only steers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import InvalidConfigError

__all__ = ["Probe", "Landing", "land"]


@dataclass(frozen=True)
class Probe:
    """One measured (or predicted) prefix of a decision path."""

    k: int  # decisions taken
    speedup: float  # over the unpruned model
    low: float  # interval of the speedup (equal to it when predicted)
    high: float
    verdict: str  # against the aim: meets | misses | unclear
    predicted_us: float  # layer-sum prediction at this prefix
    rounds: int = 0  # interleaved rounds timed (0: predicted, not measured)

    def to_json(self) -> dict:
        return {"k": self.k, "speedup": round(self.speedup, 4), "low": round(self.low, 4),
                "high": round(self.high, 4), "verdict": self.verdict,
                "predicted_us": round(self.predicted_us, 3), "rounds": self.rounds}


@dataclass(frozen=True)
class Landing:
    """The chosen prefix and every probe taken to find it."""

    k: int
    probe: Probe
    probes: tuple[Probe, ...]
    reached_aim: bool  # some prefix measured at or above the aim (or, measured, inside the band)
    stopped: bool = False  # the probes ended early: `stop` said so (the run's time budget)


def _first_at_or_below(values: Sequence[float], bound: float, start: int, stop: int) -> int | None:
    for k in range(start, stop + 1):
        if values[k] <= bound:
            return k
    return None


def land(predicted_us: Sequence[float], start_speedup: float, aim: float,
         probe: Callable[[int], Probe], *, max_probes: int = 8,
         band: tuple[float, float] | None = None, stop: Callable[[], bool] | None = None) -> Landing:
    """Find the smallest prefix of a decision path whose speedup reaches `aim`.

    Args:
        predicted_us: layer-sum prediction for prefixes 0..n (0: nothing pruned in this step).
        start_speedup: speedup of prefix 0 (the model as the step found it), measured earlier.
        aim: the speedup to reach.
        probe: measures prefix k (1 <= k <= n) and returns its `Probe`.
        max_probes: measurements at most.
        band: (low, high) speedups that are acceptable outright. A measured probe whose whole
            interval lies inside the band is taken at once; otherwise, of the measured prefixes
            inside it, the one nearest `aim` is taken.
        stop: asked after each probe; True ends the search with the probes taken so far (at
            least one), as if `max_probes` were spent.
    """
    n = len(predicted_us) - 1
    if n < 1:
        raise InvalidConfigError("land() needs a decision path of at least one decision")
    if max_probes < 1:
        raise InvalidConfigError(f"max_probes must be >= 1, got {max_probes}")
    pred = [float(v) for v in predicted_us]
    lat = {0: 1.0 / start_speedup}  # latency relative to the baseline, per known prefix
    probes: dict[int, Probe] = {}
    lo, hi = 0, None
    bisect_next = False
    target = 1.0 / aim
    stopped = False
    while len(probes) < max_probes:
        if probes and stop is not None and stop():
            stopped = True
            break
        if hi is not None and hi - lo <= 1:
            break
        if hi is None and lo == n:
            break
        if hi is None:
            below = sorted(k for k in lat if k <= lo)
            k_prev = below[-2] if len(below) >= 2 else None
            slope = None
            if k_prev is not None and pred[k_prev] - pred[lo] > 1e-9:
                slope = (lat[k_prev] - lat[lo]) / (pred[k_prev] - pred[lo])
            if slope is not None and slope > 0:
                model = [lat[lo] + slope * (pred[k] - pred[lo]) for k in range(n + 1)]
            else:
                model = [lat[lo] * pred[k] / pred[lo] if pred[lo] > 0 else lat[lo] for k in range(n + 1)]
            k = _first_at_or_below(model, target, lo + 1, n)
            k = n if k is None else k
        elif bisect_next:
            k = (lo + hi) // 2
            bisect_next = False
        else:
            span = lat[lo] - lat[hi]
            frac = (lat[lo] - target) / span if span > 1e-12 else 0.5
            want = pred[lo] + min(1.0, max(0.0, frac)) * (pred[hi] - pred[lo])
            found = _first_at_or_below(pred, want, lo + 1, hi - 1)
            k = min(max(found if found is not None else hi - 1, lo + 1), hi - 1)
            bisect_next = True
        p = probe(k)
        probes[k] = p
        if band is not None and p.rounds > 0 and band[0] <= p.low and p.high <= band[1]:
            # Measured inside the band with its whole interval: landed, whatever the aim says.
            return Landing(k=k, probe=p, probes=tuple(probes.values()), reached_aim=True)
        lat[k] = 1.0 / p.speedup
        if p.speedup >= aim:
            hi = k
        else:
            lo = k
    if hi is not None:
        inside = [p for p in probes.values() if band is not None and band[0] <= p.speedup <= band[1]]
        if inside:  # the one nearest the aim (the band's centre in the last step), from either side
            best = min(inside, key=lambda p: (abs(math.log(p.speedup / aim)), p.k))
            return Landing(k=best.k, probe=best, probes=tuple(probes.values()), reached_aim=True,
                           stopped=stopped)
        return Landing(k=hi, probe=probes[hi], probes=tuple(probes.values()), reached_aim=True,
                       stopped=stopped)
    best = max(probes.values(), key=lambda p: (p.speedup, -p.k))
    return Landing(k=best.k, probe=best, probes=tuple(probes.values()), reached_aim=False, stopped=stopped)
