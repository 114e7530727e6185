"""Two-stage benefit assessment and the plan searches (greedy, knapsack).

Search-logic tests run on small hand-made graphs (the `ModelGraph` protocol: groups, layers,
`layer_configs`, `touched_layers`) with a synthetic staircase latency defined here as test data;
the end-to-end tests at the bottom use real torch models, `build_graph` and ONNX Runtime.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from handgraph import HandGraph, conv  # tests/ is on sys.path under pytest
from searches import greedy

from locp_trt.errors import InvalidConfigError, PlanError
from locp_trt.latency.config import LayerConfig
from locp_trt.method.benefit import (
    Candidate,
    assess,
    greedy_steps,
    knapsack_search,
    neighbour_groups,
    predicted_latency_us,
)
from locp_trt.method.candidates import GroupCandidates

#: Both searches, by name, with one signature.
SEARCHES = {"greedy": greedy, "knapsack": knapsack_search}


def stair_us(cfg: LayerConfig) -> float:
    """Synthetic staircase: tiles of 8 channels on both sides, scaled by the spatial size."""
    return float(cfg.input_hw[0] * math.ceil(cfg.out_channels / 8) * math.ceil(cfg.in_channels / 8))


class Counting:
    """Wraps a latency function and counts calls per distinct config."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, cfg):
        self.calls += 1
        return self.fn(cfg)


def ramp_scores(width, seed=0):
    """Distinct positive scores, normalised to sum 1."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.5, 1.5, width)
    return s / s.sum()


def all_widths(graph, gids=None, lo=1):
    gids = gids or list(graph.groups)
    return {g: GroupCandidates(g, tuple(range(lo, graph.groups[g].width + 1)), 0) for g in gids}


def chain_graph():
    """stem(3->a) -> mid(a->b) -> out(b->c) -> head(c->10); `a` also feeds `side` (a->10)."""
    return HandGraph([
        ("stem", None, "a", conv(3, 40, 8)),
        ("mid", "a", "b", conv(40, 40, 8)),
        ("side", "a", None, conv(40, 10, 2)),
        ("out", "b", "c", conv(40, 24, 4)),
        ("head", "c", None, conv(24, 10, 1)),
    ])


# ---- stage 1 ------------------------------------------------------------------------------
def test_assess_credits_every_touched_layer():
    g = chain_graph()
    widths = {gid: grp.width for gid, grp in g.groups.items()}
    scores = ramp_scores(40)
    (c,) = assess(g, "a", widths, [32], stair_us, scores)
    # a: stem's outputs, and the inputs of both consumers (mid and side).
    expected = (
        stair_us(conv(3, 40, 8)) - stair_us(conv(3, 32, 8))
        + stair_us(conv(40, 40, 8)) - stair_us(conv(32, 40, 8))
        + stair_us(conv(40, 10, 2)) - stair_us(conv(32, 10, 2))
    )
    assert c.latency_saved_us == pytest.approx(expected)
    assert expected > stair_us(conv(40, 40, 8)) - stair_us(conv(32, 40, 8))  # side counts
    assert c.importance_lost == pytest.approx(np.sort(scores)[:8].sum())
    assert c.benefit == pytest.approx(c.latency_saved_us / (c.importance_lost + 1e-6))
    assert str(c).startswith("a: 40→32 saves ") and "µs, loses 0.1" in str(c)
    # Widths not below the current width are skipped; the result is ascending.
    out = assess(g, "a", widths, [40, 48, 16, 8, 24], stair_us, scores)
    assert [x.width for x in out] == [8, 16, 24]


def test_assess_loss_is_incremental_from_current_width():
    g = chain_graph()
    scores = ramp_scores(40, seed=3)
    (c,) = assess(g, "a", {"a": 32}, [24], stair_us, scores)
    srt = np.sort(scores)
    assert c.from_width == 32
    assert c.importance_lost == pytest.approx(srt[8:16].sum())


def test_assess_rejects_scores_of_wrong_length():
    g = chain_graph()
    with pytest.raises(PlanError, match="24 importance scores for 40 channels"):
        assess(g, "a", {}, [32], stair_us, np.ones(24))


def test_neighbour_groups():
    g = chain_graph()
    assert neighbour_groups(g, "a") == {"b"}
    assert neighbour_groups(g, "b") == {"a", "c"}


# ---- greedy -------------------------------------------------------------------------------
def test_greedy_reaches_target_on_stair_edges():
    g = chain_graph()
    scores = {gid: ramp_scores(grp.width, seed=i) for i, (gid, grp) in enumerate(g.groups.items())}
    start_us = predicted_latency_us(g, {}, stair_us)
    target = 0.6 * start_us
    # Every width is a candidate: the search itself must avoid widths just above a stair edge.
    res = greedy(g, {}, all_widths(g), scores, stair_us, target)
    assert res.met_target and res.predicted_us <= target
    assert res.predicted_us == pytest.approx(predicted_latency_us(g, res.widths, stair_us))
    assert res.start_us == pytest.approx(start_us)
    assert res.start_us - sum(s.latency_saved_us for s in res.steps) == pytest.approx(res.predicted_us)
    changed = {gid: w for gid, w in res.widths.items() if w != g.groups[gid].width}
    assert changed, "the target needs some pruning"
    for gid, w in changed.items():
        assert w % 8 == 0, f"{gid} pruned to {w}, not a stair edge"
    assert res.importance_lost == pytest.approx(sum(s.importance_lost for s in res.steps))


def test_greedy_prefers_edge_over_width_just_above():
    # One group of 72: widths 65..71 cost the same as 72, 57..64 the same as 64.
    g = HandGraph([("p", None, "a", conv(8, 72, 8)), ("q", "a", None, conv(72, 8, 8))])
    scores = {"a": ramp_scores(72)}
    start = predicted_latency_us(g, {}, stair_us)
    res = greedy(g, {}, all_widths(g), scores, stair_us, start - 1)
    assert res.widths["a"] == 64
    assert len(res.steps) == 1 and res.steps[0].width == 64


def test_greedy_stops_when_nothing_left():
    g = chain_graph()
    scores = {gid: ramp_scores(grp.width) for gid, grp in g.groups.items()}
    cands = {gid: GroupCandidates(gid, (16, grp.width), 0) for gid, grp in g.groups.items()}
    res = greedy(g, {}, cands, scores, stair_us, 1.0)
    assert not res.met_target
    assert all(w == 16 for w in res.widths.values())
    assert res.predicted_us == pytest.approx(predicted_latency_us(g, res.widths, stair_us))


def test_greedy_reassesses_consumers_after_producer_shrinks():
    g = chain_graph()
    # a's channels are nearly worthless, so a goes first; then b's staircase has changed.
    scores = {gid: ramp_scores(grp.width) for gid, grp in g.groups.items()}
    scores["a"] = scores["a"] * 1e-3
    cands = {gid: GroupCandidates(gid, (8, 16, 24, 32, grp.width), 0) for gid, grp in g.groups.items()}
    start = {gid: grp.width for gid, grp in g.groups.items()}
    widths = dict(start)
    gen = greedy_steps(g, {}, cands, scores, stair_us, 0.3 * predicted_latency_us(g, {}, stair_us))
    seen = []
    for step in gen:
        # Every decision is assessed at the widths of that moment, not at the start.
        (fresh,) = assess(g, step.group, widths, [step.width], stair_us, scores[step.group])
        assert step == fresh
        seen.append(step)
        widths[step.group] = step.width
    assert seen[0].group == "a"
    b_steps = [s for s in seen if s.group == "b"]
    assert b_steps, "b should be pruned too"
    (stale,) = assess(g, "b", start, [b_steps[0].width], stair_us, scores["b"])
    assert b_steps[0].latency_saved_us < stale.latency_saved_us  # mid's inputs shrank first


def test_latency_is_shared_through_the_callable():
    g = chain_graph()
    scores = {gid: ramp_scores(grp.width) for gid, grp in g.groups.items()}
    memo: dict[LayerConfig, float] = {}
    raw = Counting(stair_us)

    def meter(cfg):
        if cfg not in memo:
            memo[cfg] = raw(cfg)
        return memo[cfg]

    calls = Counting(meter)
    greedy(g, {}, all_widths(g), scores, calls, 0.5 * predicted_latency_us(g, {}, stair_us))
    assert raw.calls == len(memo) < calls.calls  # every distinct config measured once


# ---- knapsack -----------------------------------------------------------------------------
def two_branch_case():
    """Independent groups a (saves 9 µs, loses 1.0) and b (saves 5 µs, loses 0.5) at 16 -> 8.

    b has the better benefit (10 vs 9) but does not reach the target alone; a does. Greedy takes
    b, then still needs a (loses 1.5); the knapsack takes a alone (loses 1.0).
    """
    g = HandGraph([
        ("pa", None, "a", conv(3, 16, 8)),
        ("ha", "a", None, conv(16, 8, 1)),
        ("pb", None, "b", conv(3, 16, 4)),
        ("hb", "b", None, conv(16, 8, 1)),
    ])
    scores = {
        "a": np.array([0.125] * 8 + [1.0] * 8),
        "b": np.array([0.0625] * 8 + [1.0] * 8),
    }
    cands = {gid: GroupCandidates(gid, (8, 16), 0) for gid in "ab"}
    return g, scores, cands


def test_knapsack_beats_myopic_greedy():
    g, scores, cands = two_branch_case()
    start = predicted_latency_us(g, {}, stair_us)
    (sa,) = assess(g, "a", {}, [8], stair_us, scores["a"])
    (sb,) = assess(g, "b", {}, [8], stair_us, scores["b"])
    assert (sa.latency_saved_us, sb.latency_saved_us) == (9.0, 5.0)
    target = start - 9.0
    myopic = greedy(g, {}, cands, scores, stair_us, target)
    knap = knapsack_search(g, {}, cands, scores, stair_us, target)
    assert myopic.met_target and knap.met_target
    assert myopic.widths == {"a": 8, "b": 8}
    assert knap.widths == {"a": 8, "b": 16}
    assert knap.importance_lost == pytest.approx(1.0)
    assert myopic.importance_lost == pytest.approx(1.5)


def test_knapsack_repairs_when_shared_layers_overcredit():
    g = chain_graph()
    scores = {gid: ramp_scores(grp.width, seed=7) for gid, grp in g.groups.items()}
    cands = {gid: GroupCandidates(gid, tuple(range(8, grp.width + 1, 8)), 0) for gid, grp in g.groups.items()}
    start = predicted_latency_us(g, {}, stair_us)
    for frac in (0.8, 0.5, 0.3):
        res = knapsack_search(g, {}, cands, scores, stair_us, frac * start, buckets=200)
        assert res.met_target, str(res)
        assert res.predicted_us == pytest.approx(predicted_latency_us(g, res.widths, stair_us))
        assert res.start_us - sum(s.latency_saved_us for s in res.steps) == pytest.approx(res.predicted_us)
        for gid, w in res.widths.items():
            assert w in cands[gid].widths


def test_target_already_met_changes_nothing():
    g, scores, cands = two_branch_case()
    start = predicted_latency_us(g, {}, stair_us)
    for search in SEARCHES.values():
        res = search(g, {}, cands, scores, stair_us, start + 1)
        assert res.met_target and res.steps == () and res.widths == {"a": 16, "b": 16}


def test_search_input_errors():
    g, scores, cands = two_branch_case()
    for search in (knapsack_search, lambda *a: list(greedy_steps(*a))):
        with pytest.raises(InvalidConfigError, match="target_us must be a positive"):
            search(g, {}, cands, scores, stair_us, -5.0)
        with pytest.raises(PlanError, match="no importance scores for group 'b'"):
            search(g, {}, cands, {"a": scores["a"]}, stair_us, 10.0)
        with pytest.raises(PlanError, match="width 20 outside 1..16"):
            search(g, {"a": 20}, cands, scores, stair_us, 10.0)


def test_candidate_is_frozen():
    c = Candidate("a", 8, 1.0, 0.1, 16)
    with pytest.raises(AttributeError):
        c.width = 4


# ---- real graphs --------------------------------------------------------------------------
def conv_stair_us(cfg: LayerConfig) -> float:
    """Synthetic staircase for real configs: MACs with channels rounded up to tiles of 8."""
    h, w = cfg.input_hw
    per_group_in = cfg.in_channels // cfg.groups
    return h * w * cfg.kernel**2 * math.ceil(cfg.out_channels / 8) * math.ceil(per_group_in / 8) / 100.0


@pytest.fixture(scope="module")
def resnet20():
    import torch

    from locp_trt.method.candidates import discover_candidates
    from locp_trt.models import get_model
    from locp_trt.prune.graph import build_graph
    from locp_trt.prune.importance import Importance, group_importance

    torch.manual_seed(0)
    model = get_model("resnet20")
    graph = build_graph(model, (3, 32, 32))
    cands = discover_candidates(graph, {}, conv_stair_us, progress=False)
    scores = {gid: group_importance(model, graph, gid, Importance.L1) for gid in cands}
    return model, graph, cands, scores


@pytest.mark.parametrize("method", list(SEARCHES))
def test_resnet20_plan_meets_target_and_applies(resnet20, method):
    import torch

    from locp_trt.prune.graph import build_graph
    from locp_trt.prune.plan import PruningPlan, apply_plan

    model, graph, cands, scores = resnet20
    start = predicted_latency_us(graph, {}, conv_stair_us)
    res = SEARCHES[method](graph, {}, cands, scores, conv_stair_us, 0.6 * start)
    assert res.met_target and res.predicted_us <= 0.6 * start
    assert res.predicted_us == pytest.approx(predicted_latency_us(graph, res.widths, conv_stair_us))
    assert res.start_us - sum(s.latency_saved_us for s in res.steps) == pytest.approx(res.predicted_us)
    for gid, w in res.widths.items():
        if gid in cands:
            assert w in cands[gid].widths, f"{gid} -> {w} is not on its staircase envelope"
        else:
            assert w == graph.groups[gid].width  # the classifier output is never pruned
    # The plan is physically applicable, and the pruned model's layers are the planned configs.
    changed = {g: w for g, w in res.widths.items() if w != graph.groups[g].width}
    pruned, _ = apply_plan(model, PruningPlan("resnet20", (3, 32, 32), changed), (3, 32, 32))
    assert pruned(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert build_graph(pruned, (3, 32, 32)).layer_configs({}) == graph.layer_configs(res.widths)


def test_resnet20_knapsack_not_worse_than_greedy_on_residual_stages(resnet20):
    _, graph, cands, scores = resnet20
    start = predicted_latency_us(graph, {}, conv_stair_us)
    for frac in (0.9, 0.7, 0.5):
        g = greedy(graph, {}, cands, scores, conv_stair_us, frac * start)
        k = knapsack_search(graph, {}, cands, scores, conv_stair_us, frac * start)
        assert g.met_target and k.met_target
        assert k.importance_lost <= g.importance_lost + 1e-9, (frac, str(g), str(k))


def test_tiny_model_search_with_onnxruntime_cpu_meter():
    from models import TINY_MODELS  # tests/models.py

    from locp_trt.latency.meter import LatencyMeter
    from locp_trt.latency.runtimes import get_runtime, runtime_class
    from locp_trt.latency.store import LatencyStore
    from locp_trt.latency.timing import BenchConfig
    from locp_trt.method.candidates import discover_candidates
    from locp_trt.prune.graph import build_graph
    from locp_trt.prune.importance import Importance, group_importance

    reason = runtime_class("onnxruntime").unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    factory, shape = TINY_MODELS["residual"]
    model = factory()
    graph = build_graph(model, shape)
    with get_runtime("onnxruntime", BenchConfig(warmup=3, iters=15)) as rt:
        meter = LatencyMeter(rt, LatencyStore(None), progress=False)
        cands = discover_candidates(graph, {}, meter.latency_us, progress=False)
        scores = {gid: group_importance(model, graph, gid, Importance.L1) for gid in cands}
        start = predicted_latency_us(graph, {}, meter.latency_us)
        res = greedy(graph, {}, cands, scores, meter.latency_us, 0.8 * start)
        final = [meter.measure(c) for c in graph.layer_configs(res.widths).values()]
        stats = meter.stats
        # Latency sharing: every distinct config was timed once, the rest were memo hits.
        assert stats.measured == stats.unique < stats.requested
        for gid, w in res.widths.items():
            assert w in cands[gid].widths if gid in cands else w == graph.groups[gid].width
        assert res.predicted_us == pytest.approx(sum(m.median_us for m in final))
        assert res.met_target == (res.predicted_us <= 0.8 * start)
        if not res.met_target:  # it stopped because no envelope step saved anything more
            for gid, c in cands.items():
                offers = assess(graph, gid, res.widths, c.widths, meter.latency_us, scores[gid])
                assert all(o.latency_saved_us <= 0 for o in offers)


def test_landing_finds_partial_decisions_when_one_notch_jumps_over_the_band():
    """The envelope of `a` has only 64 and 32: that one notch takes the model from 1x to about
    1.9x, over the whole band [1.3, 1.43]. `inside_band` offers widths between the two (off the
    envelope), predicted inside the band, the centred ones first."""
    from locp_trt.method.ladder import Ladder, Rung

    g = HandGraph([("stem", None, "a", conv(3, 64, 8)), ("mid", "a", "b", conv(64, 64, 8)),
                   ("head", "b", None, conv(64, 10, 1))])

    def lin_us(cfg):
        return float(cfg.input_hw[0] * cfg.out_channels * cfg.in_channels) / 64

    def predict(w):
        return predicted_latency_us(g, w, lin_us)

    full = {"a": 64, "b": 64}
    rungs = [Rung(full, predict(full), 0.0), Rung({"a": 32, "b": 64}, predict({"a": 32, "b": 64}), 0.1)]
    cands = {"a": GroupCandidates("a", (32, 64), 0), "b": GroupCandidates("b", (64,), 0)}
    scores = {gid: ramp_scores(64, seed=i) for i, gid in enumerate(cands)}
    ladder = Ladder(rungs, graph=g, candidates=cands, scores=scores,
                    floors={"a": 8, "b": 8}, latency_us=lin_us, predict_us=predict)
    measured = (1.0, rungs[0].predicted_us / rungs[1].predicted_us)
    assert measured[1] > 1.43  # the notch overshoots the band
    band, aim = (1.3, 1.43), 1.365
    options = ladder.inside_band(1, measured, aim, band)
    assert options, "a width between 32 and 64 lands in the band"
    for r in options:
        assert 32 < r.widths["a"] < 64 and r.widths["b"] == 64
        assert band[0] <= rungs[0].predicted_us / r.predicted_us <= band[1]
    best = rungs[0].predicted_us / options[0].predicted_us
    assert abs(math.log(best / aim)) < abs(math.log(band[1] / aim))  # centred first

    # A second round starts from a plan between the rungs (measured below the band): its options
    # are single decisions on top of it, narrower than it on `a`, and still above rung 1.
    start = Rung({"a": 56, "b": 64}, predict({"a": 56, "b": 64}), 0.05)
    low = rungs[0].predicted_us / start.predicted_us
    again = ladder.inside_band(1, (low, measured[1]), aim, band, start=start)
    assert again, "a width between 32 and 56 lands in the band"
    for r in again:
        assert 32 < r.widths["a"] < 56 and r.widths["b"] == 64
        assert r.importance_lost >= start.importance_lost

    # Given the slope single decisions measured (half the chord's: they delivered half the gain
    # the chord promised), the options predicted in the band are narrower: a deeper cut is needed
    # for the same speedup.
    chord = (1 / low - 1 / measured[1]) / (start.predicted_us - rungs[1].predicted_us)
    halved = ladder.inside_band(1, (low, measured[1]), aim, band, start=start, slope=chord / 2)
    assert halved, "narrower widths between 32 and 56 land in the band along the measured slope"
    assert max(r.widths["a"] for r in halved) < min(r.widths["a"] for r in again)
