"""Stage 2 of the benefit assessment as one step of the loop uses it: the ordered plans (rungs) it
lands among.

A ladder starts at the step's widths (rung 0) and goes down, each rung predicted faster than the
one before, to the width floor: the prefixes of the greedy decision path
(`benefit.greedy_steps`, best benefit first, down to the floor), with every decision that jumps
several envelope widths split at the widths it jumps over, so the landing can stop between them.
(A ladder of knapsack plans was tried as an alternative and removed by measurement: docs/METHOD.md
§4, "The knapsack ladder".)

The loop measures rungs to land (`landing.land`) and, when a rung overshoots the band on its
own, asks `Ladder.inside_band` for single decisions from the rung before it that are predicted to
land inside. Every prediction is end to end, by the `predict_us` the loop passes in (its latency
model calibrated on what was measured before the step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..latency.config import LayerConfig
from .benefit import Candidate, assess, greedy_steps
from .candidates import GroupCandidates

__all__ = ["Rung", "Ladder", "build_ladder"]

#: Widths between two rungs' widths of a group that a landing tries when one notch jumps over the
#: target band (partial decisions).
PARTIAL_WIDTHS = 6


@dataclass(frozen=True)
class Rung:
    """One plan of a ladder.

    Attributes:
        widths: width of every group at this rung.
        predicted_us: end-to-end latency predicted for it, in µs.
        importance_lost: importance removed since the step's start (rung 0: 0).
    """

    widths: dict[str, int]
    predicted_us: float
    importance_lost: float


class Ladder:
    """The rungs of one step and what finds plans between them (`build_ladder` makes one)."""

    def __init__(self, rungs: list[Rung], *, graph, candidates: Mapping[str, GroupCandidates],
                 scores: Mapping[str, np.ndarray], floors: Mapping[str, int],
                 latency_us: Callable[[LayerConfig], float],
                 predict_us: Callable[[Mapping[str, int]], float]) -> None:
        self.rungs = tuple(rungs)
        self._graph, self._candidates, self._scores = graph, candidates, scores
        self._floors, self._latency_us, self._predict_us = floors, latency_us, predict_us

    @property
    def plans(self) -> int:
        """Rungs below the start."""
        return len(self.rungs) - 1

    @property
    def predicted_us(self) -> list[float]:
        return [r.predicted_us for r in self.rungs]

    def __str__(self) -> str:
        return f"greedy path of {self.plans} decisions"

    def inside_band(self, k: int, measured: tuple[float, float], aim: float, band: tuple[float, float],
                    limit: int = 3, start: Rung | None = None, slope: float | None = None) -> list[Rung]:
        """Single decisions from rung k - 1 (or from `start`, a plan between rungs k - 1 and k,
        measured at `measured[0]`) predicted to land in `band`, for when rung k overshot it.

        The options are every envelope width below rung k - 1 of every group, and the partial
        decisions: for each group rung k changed, up to `PARTIAL_WIDTHS` widths strictly between
        its two widths (off the envelope, so maybe a little slower per channel, but the only plans
        between the two rungs when one notch jumps over the whole band). Each option's speedup is
        interpolated between rungs k - 1 and k, their predictions against their `measured`
        speedups (or, given `slope`, from `start` along it: the relative latency that single
        decisions measured earlier actually gained per predicted µs, where one rung's cliff makes
        the chord between the rungs promise too much); options predicted in the middle half of the
        band come first, by least importance lost, then the others by nearness to the aim; at
        most `limit`.
        """
        lo, hi = (self.rungs[k - 1] if start is None else start), self.rungs[k]
        (p_lo, l_lo), (p_hi, l_hi) = (lo.predicted_us, 1 / measured[0]), (hi.predicted_us, 1 / measured[1])
        if abs(p_hi - p_lo) < 1e-9:
            return []
        if slope is None:
            slope = (l_hi - l_lo) / (p_hi - p_lo)
        inner = middle_half(band)
        options = []
        for g, gc in self._candidates.items():
            floor = self._floors.get(g, 1)
            below = {w for w in gc.widths if floor <= w < lo.widths[g]}
            if hi.widths[g] < lo.widths[g]:
                step = getattr(self._graph.groups[g], "blocks", 1)  # a grouped conv's group: whole steps
                start = -(-max(floor, hi.widths[g] + 1) // step) * step
                below |= set(_spread(range(start, lo.widths[g], step), PARTIAL_WIDTHS))
            for c in assess(self._graph, g, lo.widths, sorted(below), self._latency_us, self._scores[g]):
                new = {**lo.widths, g: c.width}
                pred_us = self._predict_us(new)
                rel = l_lo + (pred_us - p_lo) * slope
                if rel > 0 and band[0] <= 1 / rel <= band[1]:
                    centred = inner[0] <= 1 / rel <= inner[1]
                    # centred options by least importance lost, the others by nearness to the aim
                    order = c.importance_lost if centred else abs(math.log(rel * aim))
                    options.append((not centred, order, c.importance_lost, pred_us, new))
        options.sort(key=lambda o: o[:4])
        return [Rung(new, pred_us, lo.importance_lost + lost) for *_, lost, pred_us, new in options[:limit]]


def middle_half(band: tuple[float, float]) -> tuple[float, float]:
    """The middle half of `band`, on a log scale."""
    ratio = band[1] / band[0]
    return band[0] * ratio ** 0.25, band[0] * ratio ** 0.75

def _spread(values: range, n: int) -> list[int]:
    """At most n values of `values`, evenly spaced, ends included."""
    vals = list(values)
    if len(vals) <= n:
        return vals
    return sorted({vals[round(i * (len(vals) - 1) / (n - 1))] for i in range(n)})


def build_ladder(graph, current: Mapping[str, int], candidates: Mapping[str, GroupCandidates],
                 scores: Mapping[str, np.ndarray], floors: Mapping[str, int], *,
                 latency_us: Callable[[LayerConfig], float],
                 predict_us: Callable[[Mapping[str, int]], float]) -> Ladder | None:
    """The step's ladder, or None when no narrower width is predicted faster (an empty path).

    Args:
        graph: the `ModelGraph` of the model as the step found it.
        current: its widths.
        candidates: envelope widths per group (`discover_candidates`, above `floors`).
        scores: importance per group, weighed as the step compares groups.
        floors: narrowest width per group.
        latency_us: latency of one layer config, in µs.
        predict_us: end-to-end latency predicted at some widths, in µs.
    """
    path = list(greedy_steps(graph, current, candidates, scores, latency_us, 1e-9))
    path = _one_notch_at_a_time(graph, current, path, candidates, scores, latency_us)
    if not path:
        return None
    widths, lost = [dict(current)], [0.0]
    for c in path:
        widths.append({**widths[-1], c.group: c.width})
        lost.append(lost[-1] + c.importance_lost)
    rungs = [Rung(w, predict_us(w), x) for w, x in zip(widths, lost)]
    return Ladder(rungs, graph=graph, candidates=candidates, scores=scores, floors=floors,
                  latency_us=latency_us, predict_us=predict_us)


def _one_notch_at_a_time(graph, start: Mapping[str, int], path: list[Candidate],
                         cands: Mapping[str, GroupCandidates], scores: Mapping[str, np.ndarray],
                         latency_us: Callable[[LayerConfig], float]) -> list[Candidate]:
    """The same path with every multi-notch decision split at the envelope widths it jumps over.

    The greedy search may take a group from 64 straight to 16 when that has the best benefit; the
    widths in between (48, 32 on the envelope) are valid plans too. Splitting keeps the path's
    end points and order but lets the landing stop between them, so one decision can no longer
    overshoot the target by a whole stage's worth of channels.
    """
    widths = dict(start)
    out: list[Candidate] = []
    for c in path:
        between = sorted((w for w in cands[c.group].widths if c.width < w < widths[c.group]), reverse=True)
        for w in [*between, c.width]:
            (step,) = assess(graph, c.group, widths, [w], latency_us, scores[c.group])
            out.append(step)
            widths[c.group] = w
    return out

