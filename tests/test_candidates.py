"""Candidate widths per channel group: group staircases and their envelopes."""

from __future__ import annotations

import math

import pytest
from handgraph import HandGraph, conv  # tests/ is on sys.path under pytest

from locp_trt.errors import InvalidConfigError, PlanError
from locp_trt.latency.config import LayerConfig
from locp_trt.method.candidates import (
    DiscoveryMethod,
    GroupCandidates,
    discover_candidates,
    group_latency_fn,
)
from locp_trt.prune.graph import width_floor


def stair_us(cfg: LayerConfig) -> float:
    """Synthetic staircase in tiles of 8 channels on both sides (test data)."""
    return float(cfg.input_hw[0] * math.ceil(cfg.out_channels / 8) * math.ceil(cfg.in_channels / 8))


class Memo:
    """A memoising latency callable that counts real evaluations (what a LatencyMeter does)."""

    def __init__(self, fn):
        self.fn, self.memo, self.calls = fn, {}, 0

    def __call__(self, cfg):
        self.calls += 1
        if cfg not in self.memo:
            self.memo[cfg] = self.fn(cfg)
        return self.memo[cfg]


def chain():
    """stem(3->a) -> mid(a->b) -> head(b->10), and a side consumer of a; `fixed` not prunable."""
    return HandGraph(
        [
            ("stem", None, "a", conv(3, 40, 8)),
            ("mid", "a", "b", conv(40, 36, 8)),
            ("side", "a", "fixed", conv(40, 10, 2)),
            ("head", "b", None, conv(36, 10, 1)),
        ],
        fixed=("fixed",),
    )


# ---- width_floor --------------------------------------------------------------------------
def test_width_floor():
    assert width_floor(64, 0.1) == 7
    assert width_floor(64, 0.1, round_floor=8) == 8
    assert width_floor(64, 0.3, round_floor=8) == 24
    assert width_floor(5, 0.1, round_floor=8) == 5  # never above the original width
    assert width_floor(3, 1.0) == 3
    with pytest.raises(InvalidConfigError, match="min_width_ratio must be in"):
        width_floor(64, 0.0)
    with pytest.raises(InvalidConfigError, match="round_floor must be >= 1"):
        width_floor(64, 0.5, round_floor=0)


# ---- group_latency_fn ---------------------------------------------------------------------
def test_group_latency_fn_sums_producers_and_consumers():
    g = chain()
    f = group_latency_fn(g, "a", {"b": 20}, stair_us)
    for w in (40, 33, 32, 9, 1):
        expected = stair_us(conv(3, w, 8)) + stair_us(conv(w, 20, 8)) + stair_us(conv(w, 10, 2))
        assert f(w) == pytest.approx(expected)
    # Layers the group does not touch (head) are not part of its staircase.
    fb = group_latency_fn(g, "b", {}, stair_us)
    assert fb(36) == pytest.approx(stair_us(conv(40, 36, 8)) + stair_us(conv(36, 10, 1)))


def test_group_latency_fn_errors():
    g = chain()
    with pytest.raises(PlanError, match="unknown channel group 'zz'"):
        group_latency_fn(g, "zz", {}, stair_us)
    f = group_latency_fn(g, "a", {}, stair_us)
    with pytest.raises(InvalidConfigError, match="width must be >= 1"):
        f(0)


# ---- discover_candidates ------------------------------------------------------------------
@pytest.mark.parametrize("method", list(DiscoveryMethod))
def test_discover_finds_stair_edges(method):
    g = chain()
    found = discover_candidates(g, {}, stair_us, method=method, min_width_ratio=0.1, progress=False)
    assert set(found) == {"a", "b"}  # `fixed` is not prunable
    a, b = found["a"], found["b"]
    assert isinstance(a, GroupCandidates) and a.group == "a"
    # Stairs of 8 on a's staircase: the envelope is the multiples of 8 from the floor up.
    assert a.widths == (8, 16, 24, 32, 40)
    assert b.widths == (8, 16, 24, 32, 36)  # the current width is always a candidate
    assert list(a.below(40, floor=16)) == [16, 24, 32]
    assert a.probes > 0
    assert "a: 5 candidates" in str(a)


def test_discover_respects_current_widths_and_floor():
    g = chain()
    found = discover_candidates(
        g, {"a": 27}, stair_us, method=DiscoveryMethod.SWEEP, min_width_ratio=0.5, progress=False
    )
    assert found["a"].widths == (24, 27)  # floor 20, and 25..27 are one stair ending at 27
    assert found["b"].widths == (24, 32, 36)


def test_three_point_needs_fewer_measurements_than_sweep():
    g = HandGraph([("p", None, "a", conv(8, 128, 4)), ("q", "a", None, conv(128, 8, 4))])
    sweep, three = Memo(stair_us), Memo(stair_us)
    s = discover_candidates(g, {}, sweep, method=DiscoveryMethod.SWEEP, progress=False)
    t = discover_candidates(g, {}, three, method=DiscoveryMethod.THREE_POINT, progress=False)
    assert s["a"].widths == t["a"].widths
    assert len(three.memo) < len(sweep.memo)
    assert t["a"].probes < s["a"].probes


def test_group_floor_at_current_width_gives_single_candidate():
    g = chain()
    found = discover_candidates(g, {"a": 2}, stair_us, method=DiscoveryMethod.SWEEP,
                                min_width_ratio=0.5, progress=False)
    assert found["a"].widths == (2,)


# ---- real graphs --------------------------------------------------------------------------
def fine_stair_us(cfg: LayerConfig) -> float:
    """Synthetic staircase in tiles of 2 channels (the tiny models are only a few channels wide)."""
    h, w = cfg.input_hw
    per_group_in = cfg.in_channels // cfg.groups
    return float(h * w * cfg.kernel**2 * math.ceil(cfg.out_channels / 2) * math.ceil(per_group_in / 2))


@pytest.mark.parametrize("name", ["residual", "depthwise", "concat", "se", "flatten", "split"])
def test_discover_on_tiny_models(name):
    from models import TINY_MODELS  # tests/models.py

    from locp_trt.method.stairs import envelope_of
    from locp_trt.prune.graph import build_graph

    factory, shape = TINY_MODELS[name]
    graph = build_graph(factory(), shape)
    memo = Memo(fine_stair_us)
    found = discover_candidates(graph, {}, memo, method=DiscoveryMethod.SWEEP, progress=False)
    assert set(found) == {g.id for g in graph.prunable()}
    for gid, cands in found.items():
        full = graph.groups[gid].width
        lo = width_floor(full, 0.1)
        f = group_latency_fn(graph, gid, {}, fine_stair_us)
        assert cands.widths[-1] == full and list(cands.widths) == sorted(set(cands.widths))
        assert cands.widths == tuple(envelope_of({w: f(w) for w in range(lo, full + 1)}))
    # Every real measurement is of a distinct config: the rest came from the memo.
    assert len(memo.memo) < memo.calls


def test_concat_group_latency_includes_the_merge_conv():
    from models import TINY_MODELS

    from locp_trt.prune.graph import build_graph

    factory, shape = TINY_MODELS["concat"]
    graph = build_graph(factory(), shape)
    assert "merge" in graph.touched_layers("left") and "merge" in graph.touched_layers("right")
    f = group_latency_fn(graph, "right", {"left": 4}, fine_stair_us)
    for w in (4, 3, 2):
        cfgs = graph.layer_configs({"left": 4, "right": w})
        assert cfgs["merge"].in_channels == 4 + w
        assert f(w) == pytest.approx(fine_stair_us(cfgs["right"]) + fine_stair_us(cfgs["merge"]))
