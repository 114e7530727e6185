"""Two-stage benefit assessment and the plan search to a latency target (LOCP).

Stage 1 (`assess`): for one channel group and each of its candidate widths (the fast edges of
its staircase, from `candidates.discover_candidates`), a `Candidate` records

* ``latency_saved_us``: the latency saved summed over *every* layer the group touches (its
  producers' outputs and its consumers' inputs), against the group's current width, with every
  other group at its current width. A group feeding two consumers is credited for both.
* ``importance_lost``: the importance of the channels removed by this step (scores are
  normalised per group; the lowest-scoring channels go first), i.e.
  ``importance_lost(scores, width) - importance_lost(scores, current_width)``.

and its ``benefit = latency_saved_us / (importance_lost + BENEFIT_EPS)``: µs saved per unit of
importance lost. The small epsilon lets free steps (zero-importance channels) rank by their saving
instead of dividing by zero.

Stage 2 chooses one width per group so the predicted latency (the sum of every conv/linear
layer's latency, `predicted_latency_us`) goes down. Two searches do it; `method.ladder` turns the
greedy one into the ordered plans one step of the loop lands among, and the knapsack is the
HALP-style baseline the benchmarks compare with (benchmarks/accuracy.py, benchmarks/methods.py):

* `greedy_steps`: repeatedly take the candidate with the best benefit over all groups (a step may
  jump several envelope widths down at once), commit it, and re-assess that group and its
  neighbours (groups sharing a touched layer: a producer's shrink changes its consumers' input
  widths, hence their staircases), until the target is met or no step saves latency. When some
  step alone reaches the target, the cheapest such step is taken if it loses no more than the
  best-benefit step (no overshoot for nothing).
* `knapsack_search` (HALP-style): a multiple-choice knapsack. Every group offers its candidate
  widths with the saving and loss assessed at the start widths (independence assumption); a
  dynamic programme over the needed saving, discretised into `buckets` steps (rounded down, so the
  estimate is conservative), minimises the total importance lost subject to saving enough. Savings
  of two groups that share a layer do not add exactly (a layer between them is credited to both),
  so the plan's true latency is then evaluated; if it misses by d µs, the knapsack is solved again
  asking for d µs more (`KNAPSACK_ROUNDS` in all), every plan that still misses is repaired with
  greedy steps, and the met plan losing least wins.

Both end by evaluating the final plan exactly: `latency_us` over `graph.layer_configs(widths)`.
The latency model is a sum of isolated layers; it ignores fusion and non-conv ops, which the
optimize loop calibrates with an end-to-end measurement (see docs/METHOD.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidConfigError, PlanError
from ..latency.config import LayerConfig
from ..latency.joint import layer_sum_us
from ..prune.importance import importance_lost
from .candidates import GroupCandidates, group_latency_fn

__all__ = [
    "BENEFIT_EPS",
    "Candidate",
    "SearchResult",
    "assess",
    "greedy_steps",
    "knapsack_search",
    "neighbour_groups",
    "predicted_latency_us",
]

#: Added to the importance lost before dividing, so zero-loss steps rank by latency saved.
BENEFIT_EPS = 1e-6


@dataclass(frozen=True)
class Candidate:
    """One pruning decision: shrink `group` from `from_width` to `width`.

    Attributes:
        group: channel group id.
        width: width after the step.
        latency_saved_us: latency saved over every layer the group touches, in µs, against
            `from_width` with every other group at its width when assessed.
        importance_lost: normalised importance of the channels this step removes.
        from_width: width before the step.
    """

    group: str
    width: int
    latency_saved_us: float
    importance_lost: float
    from_width: int

    @property
    def benefit(self) -> float:
        """µs saved per unit of importance lost."""
        return self.latency_saved_us / (self.importance_lost + BENEFIT_EPS)

    def __str__(self) -> str:
        return (
            f"{self.group}: {self.from_width}→{self.width} saves {self.latency_saved_us:.1f} µs, "
            f"loses {self.importance_lost:.3f}"
        )


@dataclass(frozen=True)
class SearchResult:
    """A pruning plan and what the latency model predicts for it.

    Attributes:
        widths: width of every channel group of the graph.
        predicted_us: summed latency of every conv/linear layer at `widths`, in µs.
        steps: the decisions taken, in order (their savings are exact at the time each was
            committed, so they add up to `start_us - predicted_us`).
        met_target: whether `predicted_us <= target_us`.
        start_us: summed latency at the start widths, in µs.
        target_us: the target it searched for, in µs.
    """

    widths: dict[str, int]
    predicted_us: float
    steps: tuple[Candidate, ...]
    met_target: bool
    start_us: float
    target_us: float

    @property
    def importance_lost(self) -> float:
        """Total normalised importance of the removed channels."""
        return float(sum(s.importance_lost for s in self.steps))

    def __str__(self) -> str:
        verdict = "meets" if self.met_target else "MISSES"
        return (
            f"knapsack plan: {self.start_us:.1f} → {self.predicted_us:.1f} µs "
            f"({verdict} target {self.target_us:.1f} µs), {len(self.steps)} steps, "
            f"importance lost {self.importance_lost:.3f}"
        )


# ---- shared helpers ------------------------------------------------------------------------
def predicted_latency_us(
    graph, widths: Mapping[str, int], latency_us: Callable[[LayerConfig], float]
) -> float:
    """Summed latency (µs) of every conv/linear layer of `graph` at `widths`."""
    return layer_sum_us(latency_us, graph.layer_configs(dict(widths)).values())


def neighbour_groups(graph, group_id: str) -> set[str]:
    """Groups sharing a layer with `group_id` (the other side of its producers and consumers)."""
    out: set[str] = set()
    for name in graph.touched_layers(group_id):
        site = graph.layers[name]
        # A conv after a concat reads several groups (`in_parts`); `in_group` is the first.
        parts = {p.group for p in getattr(site, "in_parts", ())}
        out |= parts | {site.in_group, site.out_group}
    out -= {None, group_id}
    return out


def _full_widths(graph, widths: Mapping[str, int]) -> dict[str, int]:
    unknown = sorted(set(widths) - set(graph.groups))
    if unknown:
        raise PlanError(
            f"widths name groups the model does not have: {unknown[:5]}; "
            f"known groups include {sorted(graph.groups)[:5]}"
        )
    full = {gid: int(widths.get(gid, g.width)) for gid, g in graph.groups.items()}
    for gid, w in full.items():
        if not 1 <= w <= graph.groups[gid].width:
            raise PlanError(
                f"group {gid!r}: width {w} outside 1..{graph.groups[gid].width} (its original width)"
            )
    return full


def _check_scores(graph, group_id: str, scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size != graph.groups[group_id].width:
        raise PlanError(
            f"group {group_id!r}: {s.size} importance scores for {graph.groups[group_id].width} "
            f"channels; recompute importance on the same model the graph was built from"
        )
    return s


# ---- stage 1 -------------------------------------------------------------------------------
def assess(
    graph,
    group_id: str,
    widths: Mapping[str, int],
    candidate_widths: Iterable[int],
    latency_us: Callable[[LayerConfig], float],
    scores: np.ndarray,
) -> list[Candidate]:
    """Stage 1: saving and loss of shrinking one group to each candidate width.

    Args:
        graph: a `ModelGraph`.
        group_id: the group to shrink.
        widths: current width per group (original width where absent).
        candidate_widths: widths to assess; those not below the current width are skipped.
        latency_us: latency of one layer config, in µs.
        scores: the group's importance, one score per original channel.

    Returns:
        One `Candidate` per candidate width below the current one, ascending by width.
    """
    current = int(widths.get(group_id, graph.groups[group_id].width))
    s = _check_scores(graph, group_id, scores)
    latency_at = group_latency_fn(graph, group_id, widths, latency_us)
    base_us = latency_at(current)
    base_lost = importance_lost(s, current)
    out = []
    for w in sorted({int(w) for w in candidate_widths}):
        if not 1 <= w < current:
            continue
        out.append(
            Candidate(
                group=group_id,
                width=w,
                latency_saved_us=base_us - latency_at(w),
                importance_lost=float(importance_lost(s, w) - base_lost),
                from_width=current,
            )
        )
    return out


# ---- stage 2 -------------------------------------------------------------------------------
def _check_inputs(graph, candidates, scores, target_us) -> None:
    try:
        ok = math.isfinite(float(target_us)) and float(target_us) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidConfigError(f"target_us must be a positive number of µs, got {target_us!r}")
    for gid in candidates:
        if gid not in graph.groups:
            raise PlanError(f"candidates given for unknown group {gid!r}")
        if gid not in scores:
            raise PlanError(f"no importance scores for group {gid!r}; score every candidate group")


def greedy_steps(
    graph,
    start_widths: Mapping[str, int],
    candidates: Mapping[str, GroupCandidates],
    scores: Mapping[str, np.ndarray],
    latency_us: Callable[[LayerConfig], float],
    target_us: float,
) -> Iterator[Candidate]:
    """Greedy search as a generator of decisions, each committed as it is yielded.

    Stops when the predicted latency is <= `target_us` or no step saves latency. Every decision
    is assessed at the widths of its moment (after the decisions before it).

    Args:
        graph: a `ModelGraph`.
        start_widths: width per group to start from (original width where absent).
        candidates: candidate widths per group; groups absent are not pruned.
        scores: importance per group (one score per original channel).
        latency_us: latency of one layer config, in µs.
        target_us: latency target for the summed layers, in µs (a tiny one: down to the floor).
    """
    _check_inputs(graph, candidates, scores, target_us)
    widths = _full_widths(graph, start_widths)
    total = predicted_latency_us(graph, widths, latency_us)
    neighbours = {g: neighbour_groups(graph, g) for g in candidates}

    def options(g: str) -> list[Candidate]:
        below = [w for w in candidates[g].widths if 1 <= w < widths[g]]
        return assess(graph, g, widths, below, latency_us, scores[g]) if below else []

    offers = {g: options(g) for g in candidates}
    while total > target_us:
        live = [c for opts in offers.values() for c in opts if c.latency_saved_us > 0]
        if not live:
            break
        # Best benefit; ties go to the larger saving, then the wider width, then a stable order.
        best = max(live, key=lambda c: (c.benefit, c.latency_saved_us, c.width, c.group))
        finishing = [c for c in live if total - c.latency_saved_us <= target_us]
        if finishing:
            cheapest = min(finishing, key=lambda c: (c.importance_lost, -c.latency_saved_us, c.group))
            if cheapest.importance_lost <= best.importance_lost:
                best = cheapest
        yield best
        widths[best.group] = best.width
        total = predicted_latency_us(graph, widths, latency_us)  # exact, not a running sum
        for g in {best.group} | neighbours[best.group]:
            if g in candidates:
                offers[g] = options(g)


def _greedy(graph, widths, candidates, scores, latency_us, target_us) -> tuple[dict[str, int], list[Candidate]]:
    """(final widths, decisions) of the greedy search from `widths`."""
    steps = list(greedy_steps(graph, widths, candidates, scores, latency_us, target_us))
    final = _full_widths(graph, widths)
    for step in steps:
        final[step.group] = step.width
    return final, steps


def _knapsack_choice(
    offers: dict[str, list[Candidate]], need_us: float, buckets: int
) -> dict[str, Candidate]:
    """Multiple-choice knapsack: min total importance lost with summed saving >= need_us.

    Savings are discretised into `buckets` units of need_us / buckets, rounded down; the bucket
    index saturates at `buckets` (enough saved). If no choice saves enough, the choice saving
    the most buckets (then losing least) is returned.
    """
    unit = need_us / buckets
    n = buckets + 1
    dp = np.full(n, np.inf)
    dp[0] = 0.0
    trace: list[tuple[str, np.ndarray, np.ndarray]] = []  # per group: option index, source bucket
    idx = np.arange(n)
    for g, opts in offers.items():
        new = dp.copy()  # option -1: keep the start width
        pick = np.full(n, -1)
        src = idx.copy()
        for k, c in enumerate(opts):
            su = min(buckets, int(math.floor(c.latency_saved_us / unit + 1e-9)))
            cand = np.full(n, np.inf)
            from_b = np.full(n, -1)
            # Uncapped moves b -> b + su.
            cand[su:] = dp[: n - su] + c.importance_lost
            from_b[su:] = idx[: n - su]
            # Moves that overshoot the cap all land in the last bucket.
            if su > 0:
                tail = dp[n - su :]
                j = int(np.argmin(tail))
                v = tail[j] + c.importance_lost
                if v < cand[-1]:
                    cand[-1] = v
                    from_b[-1] = n - su + j
            better = cand < new
            new[better] = cand[better]
            pick[better] = k
            src[better] = from_b[better]
        dp = new
        trace.append((g, pick, src))
    finite = np.flatnonzero(np.isfinite(dp))
    b = int(finite.max())  # dp[0] is always finite
    chosen: dict[str, Candidate] = {}
    for g, pick, src in reversed(trace):
        k = int(pick[b])
        if k >= 0:
            chosen[g] = offers[g][k]
        b = int(src[b])
    return chosen


def knapsack_search(
    graph,
    start_widths: Mapping[str, int],
    candidates: Mapping[str, GroupCandidates],
    scores: Mapping[str, np.ndarray],
    latency_us: Callable[[LayerConfig], float],
    target_us: float,
    *,
    buckets: int = 1000,
) -> SearchResult:
    """Stage 2 as a knapsack: a width per group so the summed layer latency reaches `target_us`
    with the least importance lost (see the module docstring).

    Args:
        graph: a `ModelGraph`.
        start_widths: width per group to start from (original width where absent).
        candidates: candidate widths per group (from `discover_candidates`); others stay.
        scores: importance per group (one score per original channel).
        latency_us: latency of one layer config, in µs (a `LatencyMeter` behind it).
        target_us: latency target for the summed layers, in µs.
        buckets: resolution of the knapsack's latency budget.

    Returns:
        The plan; `met_target` is False when no candidate step was left before the target.
    """
    if not isinstance(buckets, int) or buckets < 1:
        raise InvalidConfigError(f"buckets must be a positive int, got {buckets!r}; e.g. 1000")
    _check_inputs(graph, candidates, scores, target_us)
    start = _full_widths(graph, start_widths)
    start_us = predicted_latency_us(graph, start, latency_us)
    steps: list[Candidate] = []
    widths = dict(start)
    if start_us - target_us > 0:
        widths, steps = _knapsack(graph, start, candidates, scores, latency_us, target_us, buckets)
    predicted = predicted_latency_us(graph, widths, latency_us)
    return SearchResult(
        widths=dict(widths),
        predicted_us=predicted,
        steps=tuple(steps),
        met_target=predicted <= target_us,
        start_us=start_us,
        target_us=float(target_us),
    )


#: Knapsack rounds: each re-solves with the need raised by the previous plan's true shortfall.
KNAPSACK_ROUNDS = 3


def _knapsack(graph, start, candidates, scores, latency_us, target_us, buckets):
    """Knapsack plans, each checked exactly and repaired; the met plan losing least wins.

    Round r solves the knapsack for the needed saving; where shared layers were over-credited
    and the true latency misses the target by d µs, round r + 1 asks for d µs more. Every
    round's plan that still misses is repaired with greedy steps.
    """
    offers = {}
    for g in sorted(candidates):
        below = [w for w in candidates[g].widths if 1 <= w < start[g]]
        opts = assess(graph, g, start, below, latency_us, scores[g]) if below else []
        offers[g] = [c for c in opts if c.latency_saved_us > 0]
    start_us = predicted_latency_us(graph, start, latency_us)
    need = start_us - target_us
    plans: list[tuple[bool, float, float, dict[str, int], list[Candidate]]] = []
    seen: set[tuple[tuple[str, int], ...]] = set()
    for _ in range(KNAPSACK_ROUNDS):
        chosen = _knapsack_choice(offers, need, buckets)
        key = tuple(sorted((g, c.width) for g, c in chosen.items()))
        if key in seen:
            break
        seen.add(key)
        # Commit the chosen widths one by one, re-assessed against the widths so far, so the
        # recorded savings are exact (they add up to the true reduction).
        widths, steps = dict(start), []
        for g in sorted(chosen):
            (step,) = assess(graph, g, widths, [chosen[g].width], latency_us, scores[g])
            steps.append(step)
            widths[g] = step.width
        shortfall = predicted_latency_us(graph, widths, latency_us) - target_us
        if shortfall > 0:
            widths, more = _greedy(graph, widths, candidates, scores, latency_us, target_us)
            steps = steps + more
        predicted = predicted_latency_us(graph, widths, latency_us)
        lost = float(sum(st.importance_lost for st in steps))
        plans.append((predicted > target_us, lost, predicted, widths, steps))
        if shortfall <= 0:
            break
        need += shortfall
    _, _, _, widths, steps = min(plans, key=lambda p: p[:3])
    return widths, steps

