"""Candidate widths per channel group: the fast edges of the group's latency staircase.

A channel group's width sets the output channels of its producers and the input channels of its
consumers, so the latency that moves with the group is the sum over every layer it touches
(`group_latency_fn`). Plotted against the width, that sum is a staircase; only the widths on its
Pareto lower envelope are worth pruning to (no wider width is as fast: a width just above a stair
edge costs a full stair and keeps more channels for nothing, a width just below it saves nothing).
`discover_candidates` finds those widths for every prunable group with `stairs.py`, by
three-point discrimination (few probes) or an exhaustive sweep (every width; for checking);
`DiscoveryMethod` is `stairs.EnvelopeMethod` under the name that says what it chooses here.

All latency goes through the `latency_us` callable, which the caller backs with a
`LatencyMeter` (memo + persistent store): a config shared by two groups, or seen again in a
later iteration, is measured once. That is the method's latency sharing. When the callable can
also estimate (an `estimate_s(configs)` method, as `LatencyMeter` has), the progress bar says
about how long the measurements left in this discovery take.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..errors import InvalidConfigError, PlanError
from ..latency.config import LayerConfig
from ..latency.joint import layer_sum_us
from ..progress import format_duration, progress_enabled
from ..prune.graph import group_floor
from .stairs import DEFAULT_REL_TOL, pareto_envelope, sweep, three_point_discrimination
from .stairs import EnvelopeMethod as DiscoveryMethod

__all__ = [
    "DiscoveryMethod",
    "GroupCandidates",
    "group_latency_fn",
    "discover_candidates",
]

@dataclass(frozen=True)
class GroupCandidates:
    """The widths a group may be pruned to, as found on its staircase.

    Attributes:
        group: channel group id.
        widths: envelope widths <= the group's current width, ascending; the current width is
            always the last one.
        probes: staircase points evaluated to find them (before latency sharing: many of them
            are answered from the meter's memo or store).
    """

    group: str
    widths: tuple[int, ...]
    probes: int
    skipped: bool = False  # not discovered (the run's time budget was spent): current width only

    def below(self, width: int, floor: int = 1) -> tuple[int, ...]:
        """Candidate widths strictly below `width` and at least `floor`, ascending."""
        return tuple(w for w in self.widths if floor <= w < width)

    def __str__(self) -> str:
        return f"{self.group}: {len(self.widths)} candidates {list(self.widths)} ({self.probes} probes)"


def _current_width(graph, group_id: str, widths: Mapping[str, int]) -> int:
    if group_id not in graph.groups:
        raise PlanError(
            f"unknown channel group {group_id!r}; the model has {len(graph.groups)} groups, "
            f"e.g. {sorted(graph.groups)[:5]}"
        )
    return int(widths.get(group_id, graph.groups[group_id].width))


def group_latency_fn(
    graph,
    group_id: str,
    widths: Mapping[str, int],
    latency_us: Callable[[LayerConfig], float],
) -> Callable[[int], float]:
    """The group's staircase: width -> summed latency (µs) of every layer the group touches.

    Touched layers are the group's producers (output channels) and consumers (input channels);
    every other group stays at `widths` (original width where absent). Layers the group does not
    touch do not change with its width and are left out.

    Args:
        graph: a `ModelGraph`.
        group_id: the group to vary.
        widths: current width of the other groups.
        latency_us: latency of one layer config, in µs (a `LatencyMeter` behind it).

    Returns:
        A function of the group's width returning µs; it evaluates lazily, call by call.
    """
    _current_width(graph, group_id, widths)
    touched = tuple(graph.touched_layers(group_id))
    base = dict(widths)
    graph.layer_configs(base, touched)  # checks the widths once; each call checks its own width

    def latency_at(width: int) -> float:
        if width < 1:
            raise InvalidConfigError(f"group {group_id!r}: width must be >= 1, got {width}")
        graph.layer_configs({group_id: int(width)}, ())  # checks this width (conv-group multiples)
        cfgs = graph.layer_configs({**base, group_id: int(width)}, touched, check=False)
        return layer_sum_us(latency_us, [cfgs[name] for name in touched])

    return latency_at


def _width_range(graph, gid: str, widths: Mapping[str, int], floors: Mapping[str, int] | None,
                 min_width_ratio: float, round_floor: int) -> tuple[int, int]:
    """(narrowest, current) width the discovery varies `gid` between."""
    hi = _current_width(graph, gid, widths)
    group = graph.groups[gid]
    floor = (floors or {}).get(gid)
    if floor is None:
        floor = group_floor(group, min_width_ratio, round_floor)
    if getattr(group, "parts", ()):
        floor = max(int(floor), group.min_width())
    step = getattr(group, "blocks", 1)
    floor = -(-int(floor) // step) * step  # a grouped conv's channel group: whole steps
    return min(floor, hi), hi


def _staircase_configs(graph, widths: Mapping[str, int],
                       ranges: Mapping[str, tuple[int, int]]) -> dict[str, list[LayerConfig]]:
    """Per group, the layer configs of every width of its staircase: what a sweep asks for (an
    upper bound for three-point discrimination, which asks for some of them)."""
    out = {}
    for gid, (lo, hi) in ranges.items():
        touched = graph.touched_layers(gid)
        cfgs: dict[LayerConfig, None] = {}
        for w in range(lo, hi + 1, getattr(graph.groups[gid], "blocks", 1)):
            at = graph.layer_configs({**widths, gid: w}, touched)
            cfgs.update(dict.fromkeys(at[n] for n in touched))
        out[gid] = list(cfgs)
    return out


def _time_left(estimate_s: Callable[[Iterable[LayerConfig]], float | None],
               configs: Iterable[LayerConfig]) -> str:
    """The progress bar's note: at most how long the layer measurements left take."""
    left = estimate_s(configs)
    if left is None:
        return "timing the first layer configs"
    return f"<= {format_duration(left)} of layer measurements left"


def discover_candidates(
    graph,
    widths: Mapping[str, int],
    latency_us: Callable[[LayerConfig], float],
    *,
    method: DiscoveryMethod = DiscoveryMethod.THREE_POINT,
    min_width_ratio: float = 0.1,
    round_floor: int = 1,
    rel_tol: float = DEFAULT_REL_TOL,
    floors: Mapping[str, int] | None = None,
    max_explore: int | None = 48,
    progress: bool = True,
    stop: Callable[[], bool] | None = None,
) -> dict[str, GroupCandidates]:
    """Envelope widths of every prunable group's staircase, at the current `widths`.

    Each group is varied between its floor (`group_floor` of the group) and its current width
    with all other groups at `widths`. An explicit floor is raised where it would empty a concat
    part of the group. A group a grouped conv reads or writes takes multiples of its `blocks`
    only (the conv's `groups`; see `prune.graph`), and so do its candidates.

    Args:
        graph: a `ModelGraph`.
        widths: current width per group (original width where absent).
        latency_us: latency of one layer config, in µs; back it with a `LatencyMeter` so shared
            configs are measured once.
        method: three-point discrimination or exhaustive sweep.
        min_width_ratio: narrowest width as a fraction of the group's original width.
        round_floor: the floor is rounded up to a multiple of this.
        max_explore: cap on three-point's exploration probes per group (see `stairs`).
        floors: explicit narrowest width per group, overriding `min_width_ratio` (the optimize
            loop passes floors relative to the ORIGINAL model while `graph` is the pruned one).
        rel_tol: a wider width within this fraction of a narrower one's latency counts as
            equally fast (the envelope rule of `stairs.py`; timing noise must not make candidates).
        progress: show a progress bar (stderr) over the groups.
        stop: asked before each group once some group has a narrower candidate; True leaves the
            groups not yet discovered at their current width (`skipped`): the run's time budget.

    Returns:
        Group id -> `GroupCandidates`, for prunable groups only.
    """
    from tqdm.auto import tqdm

    method = DiscoveryMethod(method)
    prunable = [gid for gid, g in graph.groups.items() if g.prunable]
    ranges = {gid: _width_range(graph, gid, widths, floors, min_width_ratio, round_floor)
              for gid in prunable}
    out: dict[str, GroupCandidates] = {}
    bar = tqdm(prunable, desc="stairs", unit="group", disable=not progress_enabled(progress))
    estimate = getattr(latency_us, "estimate_s", None)
    ahead = _staircase_configs(graph, widths, ranges) if estimate is not None and not bar.disable else None
    stopped = False
    for i, gid in enumerate(bar):
        lo, hi = ranges[gid]
        if not stopped and stop is not None and any(len(c.widths) > 1 for c in out.values()):
            stopped = stop()
        if stopped:
            out[gid] = GroupCandidates(gid, (hi,), 0, skipped=True)
            continue
        if ahead is not None:
            bar.set_postfix_str(_time_left(estimate, (c for g in prunable[i:] for c in ahead[g])))
        blocks = getattr(graph.groups[gid], "blocks", 1)
        measure = group_latency_fn(graph, gid, widths, latency_us)
        if lo >= hi:
            out[gid] = GroupCandidates(gid, (hi,), 0)
            continue
        if method is DiscoveryMethod.SWEEP:
            found = pareto_envelope(sweep(measure, range(lo, hi + 1, blocks)), rel_tol)
            probes = len(range(lo, hi + 1, blocks))
        else:
            # A grouped conv's group is discovered in units of its conv groups (widths k * blocks),
            # so alignment, grid and edges are found among the widths it can take.
            disc = three_point_discrimination(lambda k, m=measure, b=blocks: m(k * b), lo // blocks, hi // blocks,
                                              rel_tol=rel_tol, max_explore=max_explore)
            found = [w * blocks for w in disc.widths]
            probes = disc.probes
        envelope = sorted({int(w) for w in found if lo <= int(w) <= hi} | {hi})
        out[gid] = GroupCandidates(gid, tuple(envelope), int(probes))
    discovered = getattr(latency_us, "discovered", None)  # a recorder: its estimate is moot now
    if discovered is not None:
        discovered()
    return out
