"""Grouped convolutions (issue 17, class 3): a channel group that a grouped conv (groups > 1, not
depthwise; ResNeXt, RegNet) reads or writes is pruned evenly inside each conv group, keeping
`groups`: widths are multiples of `groups` and the same positions go from every conv group.
Checked on a tiny ResNeXt (tests/models.py `ResNeXtLike`) and on formula or recorded latencies."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torch.nn as nn
from models import TINY_MODELS, ResNeXtLike, randomise_bn  # tests/models.py
from test_plan import zero_channels  # tests/test_plan.py

from locp_trt.deploy.export import export_onnx
from locp_trt.errors import PlanError
from locp_trt.method.candidates import DiscoveryMethod, discover_candidates
from locp_trt.method.config import OptimizeConfig
from locp_trt.method.configs_list import Coverage, configs_for_model
from locp_trt.method.loop import Optimizer
from locp_trt.prune import PruningPlan, apply_plan, load_pruned, save_pruned
from locp_trt.prune.graph import build_graph, group_floor
from locp_trt.prune.importance import group_importance, share_blocks

GROUPED = ("blocks.0.a.0", "blocks.0.b.0", "blocks.1.a.0", "blocks.1.b.0")  # in / out of the 3x3s


def resnext():
    factory, shape = TINY_MODELS["resnext"]
    torch.manual_seed(0)
    model = factory().eval()
    randomise_bn(model, 1)
    return model, shape


def test_grouped_groups_are_prunable_in_whole_steps_of_groups():
    model, shape = resnext()
    g = build_graph(model, shape)
    assert [x.id for x in g.unprunable()] == ["fc"]
    assert {x.id for x in g.prunable() if x.blocks > 1} == set(GROUPED)
    assert all(g.groups[gid].blocks == 4 for gid in GROUPED) and g.groups["stem.0"].blocks == 1
    assert "4 conv groups: widths in steps of 4" in str(g.groups["blocks.0.a.0"])
    # the measured config is the grouped conv at the new widths, groups kept: its own store key
    cfg = g.layer_configs({"blocks.0.a.0": 12, "blocks.0.b.0": 20})["blocks.0.b.0"]
    assert (cfg.in_channels, cfg.out_channels, cfg.groups, cfg.weight_shape[1]) == (12, 20, 4, 3)
    assert cfg.key() != cfg.__class__(**{**cfg.__dict__, "groups": 1}).key()
    assert group_floor(g.groups["blocks.0.a.0"], 0.1) == 4  # 3.2 -> 4: one channel per conv group
    assert group_floor(g.groups["blocks.0.a.0"], 0.3) == 12  # 9.6 -> 10 -> 12
    with pytest.raises(PlanError, match="not a multiple of 4"):
        g.layer_configs({"blocks.0.b.0": 10})
    with pytest.raises(PlanError, match="not a multiple of 4"):
        PruningPlan(None, shape, {"blocks.1.a.0": 30}).validate(g)


def test_a_grouped_conv_reading_a_concat_keeps_its_channels_with_a_reason():
    class ConcatGrouped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left, self.right = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)
            self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(self.g(torch.cat([self.left(x), self.right(x)], 1)).mean((2, 3)))

    g = build_graph(ConcatGrouped().eval(), (3, 6, 6))
    for gid in ("left", "right"):
        assert not g.groups[gid].prunable
        assert "grouped conv g (groups=4) reads 8 of its 16 input channels" in g.groups[gid].reason
    assert g.groups["g"].prunable and g.groups["g"].blocks == 4  # its output: written whole by g


@pytest.mark.parametrize("method", [DiscoveryMethod.THREE_POINT, DiscoveryMethod.SWEEP])
def test_candidates_and_config_lists_hold_multiples_of_groups_only(method):
    model, shape = resnext()
    g = build_graph(model, shape)
    # a staircase with a stair every 3 conv-group widths: envelope widths exist below the top
    cands = discover_candidates(g, {}, lambda c: float(c.flops // 3000 + c.out_channels // 12),
                                method=method, progress=False)
    for gid in GROUPED:
        assert len(cands[gid].widths) > 1 and all(w % 4 == 0 for w in cands[gid].widths), cands[gid]
    assert any(w % 4 for w in cands["stem.0"].widths + cands["blocks.0.c.0"].widths)  # others: any width
    grid = configs_for_model(g, coverage=Coverage.GRID).configs
    grouped = [c for c in grid if c.groups > 1]
    assert grouped and all(c.groups == 4 and c.in_channels % 4 == 0 == c.out_channels % 4 for c in grouped)


def test_scores_are_shared_across_conv_groups():
    s = np.arange(8, dtype=float)
    assert share_blocks(s, 2).tolist() == [2, 3, 4, 5, 2, 3, 4, 5] and share_blocks(s, 2).sum() == s.sum()
    model, shape = resnext()
    g = build_graph(model, shape)
    s = group_importance(model, g, "blocks.0.b.0", "l1")
    assert np.allclose(s.reshape(4, 8), s[:8]) and np.isclose(s.sum(), 1.0)


def test_pruning_zeroed_positions_keeps_outputs_and_exports(tmp_path):
    """Drop the same positions in every conv group of the grouped groups after zeroing them: the
    pruned model computes what the zeroed one does (so the grouped weights were sliced right),
    exports to ONNX and matches PyTorch there, and reloads from its plan."""
    model, shape = resnext()
    g = build_graph(model, shape)
    drops = {"blocks.0.a.0": [1, 5], "blocks.0.b.0": [0, 2, 7], "blocks.1.a.0": [3], "blocks.1.b.0": [4, 6]}
    kept = {}
    for gid, positions in drops.items():
        drop = [b * 8 + p for b in range(4) for p in positions]
        zero_channels(g, gid, drop)
        kept[gid] = [i for i in range(32) if i not in drop]
    x = torch.randn(3, *shape)
    with torch.no_grad():
        before = model(x)
    pruned, plan = apply_plan(model, PruningPlan(None, shape, {k: len(v) for k, v in kept.items()}), shape,
                              kept=kept)
    with torch.no_grad():
        after = pruned(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    b0, b1 = pruned.blocks[0].b[0], pruned.blocks[1].b[0]
    assert (b0.in_channels, b0.out_channels, b0.groups) == (24, 20, 4)
    assert (b1.in_channels, b1.out_channels, b1.groups) == (28, 24, 4)
    res = export_onnx(pruned, tmp_path / "m.onnx", (2, *shape), "fp32")
    assert res.verified and res.max_abs_diff <= res.tolerance
    loaded, plan2 = load_pruned(save_pruned(pruned, plan, tmp_path / "p.pt"), arch_factory=ResNeXtLike)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), after)
    with pytest.raises(PlanError, match="same positions in each of its 4 conv groups"):
        bad = {"blocks.0.a.0": [i for i in range(32) if i not in (0, 9, 16, 25)]}  # positions 0, 1, 0, 1
        apply_plan(model, PruningPlan(None, shape, {"blocks.0.a.0": 28}), shape, kept=bad)


def test_importance_picks_positions_kept_in_every_conv_group():
    model, shape = resnext()
    scores = {"blocks.1.a.0": np.tile(np.arange(8, dtype=float), 4)}
    scores["blocks.1.a.0"][0] = 100.0  # one channel of position 0 alone: summed, position 0 is the best
    _, plan = apply_plan(model, PruningPlan(None, shape, {"blocks.1.a.0": 8}), shape, scores=scores)
    assert plan.kept["blocks.1.a.0"] == [0, 7, 8, 15, 16, 23, 24, 31]


def test_the_loop_prunes_grouped_layers_to_the_target(tmp_path):
    """The loop on a formula latency (FLOPs plus a per-channel cost) lands at 1.5x, and the
    grouped convs are among what it prunes; the model keeps its output and exports."""
    model, shape = resnext()
    lines: list[str] = []
    result = Optimizer(model, shape, OptimizeConfig(speedup=1.5, steps=2, extra_steps=1),
                       latency_us=lambda cfg: cfg.flops / 1e3 + cfg.out_channels, prepare_model=None,
                       out_dir=tmp_path, log=lines.append, progress=False).run()
    assert ("note: 4 channel groups meet grouped convs: each is pruned evenly inside every conv group, in "
            "steps of its groups, and groups is kept (e.g. blocks.0.a.0: 32 channels in 4 conv groups)") in lines
    assert result.status in ("landed", "overshot") and result.speedup >= 1.5
    convs = [result.model.blocks[i].b[0] for i in (0, 1)]
    assert all(c.groups == 4 for c in convs)
    assert any(c.in_channels < 32 or c.out_channels < 32 for c in convs)
    assert all(result.plan.widths[gid] % 4 == 0 for gid in GROUPED)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape == (2, 5)
    res = export_onnx(result.model, tmp_path / "m.onnx", (2, *shape), "fp32")
    assert res.verified and res.max_abs_diff <= res.tolerance


def test_zoo_groups_says_what_is_done_with_grouped_groups(capsys, monkeypatch):
    from locp_trt.cli.zoo_cmd import GROUPED_NOTE, Command
    from locp_trt.models import registry

    monkeypatch.setitem(registry._FACTORIES, "tiny_resnext", lambda num_classes=5, in_channels=3: ResNeXtLike())
    monkeypatch.setitem(registry._SPECS, "tiny_resnext",
                        registry.ModelSpec("tiny_resnext", (3, 16, 16), 5, "a tiny ResNeXt"))
    p = argparse.ArgumentParser()
    Command.add_arguments(p)
    assert Command().run(p.parse_args(["tiny_resnext", "--groups"])) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("tiny_resnext"))
    assert "6/7" in line and "4/4" in line  # 6 of 7 groups prunable; 4 of 4 grouped ones
    assert GROUPED_NOTE in out and "evenly inside every conv group" in out


def test_steps_compose_kept_positions_onto_the_original(tmp_path):
    """Two steps: the second prunes the first's model, and its plan (kept indices onto the
    original channels) still drops the same positions in every conv group, so each checkpoint
    rebuilds from the original model and computes what the loop's model computes."""
    from locp_trt.method.config import GeometricSchedule

    model, shape = resnext()
    opt = Optimizer(model, shape, OptimizeConfig(speedup=2.5, steps=2, extra_steps=1),
                    latency_us=lambda cfg: cfg.flops / 1e3 + cfg.out_channels, prepare_model=None,
                    out_dir=tmp_path, log=lambda _: None, progress=False, schedule=GeometricSchedule(2, 1))
    result = opt.run()
    assert result.chosen_step == 2 and result.speedup >= 2.5
    x = torch.randn(2, *shape)
    for step in (1, 2):
        rebuilt, plan = opt.checkpoints.load_step(step)
        for gid in GROUPED:
            kept = plan.kept[gid]
            assert sorted(kept) == sorted(b * 8 + i % 8 for b in range(4) for i in kept[: len(kept) // 4])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), result.model(x))


def test_the_uniform_baseline_keeps_whole_conv_groups():
    """benchmarks/methods.py's uniform L1 baseline (the GPU table's RegNet cell) gives a grouped
    conv's channel groups multiples of its groups, and its plan applies."""
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import methods

    model, shape = resnext()
    subject = methods.make_subject("tiny_resnext", model, shape)
    widths = methods.uniform_widths(subject, 0.7)
    assert all(widths[gid] == 8 for gid in GROUPED) and widths["stem.0"] == 5  # 9.6 -> 8 (of 4s); 4.8 -> 5
    assert all(w == 4 for gid, w in methods.uniform_widths(subject, 0.99).items() if gid in GROUPED)
    variant = methods.run_uniform(subject, 0.5)
    conv = variant.model.blocks[0].b[0]
    assert conv.groups == 4 and conv.in_channels < 32 and conv.in_channels % 4 == 0
    assert abs(variant.flops / subject.flops - 0.5) < 0.1  # coarse steps: near the target FLOPs


def test_partial_decisions_between_two_rungs_keep_whole_conv_groups():
    """When one notch of a grouped conv's group jumps over the band, the landing's partial
    decisions (widths between the two rungs', off the envelope) are multiples of its groups."""
    from locp_trt.method.benefit import predicted_latency_us
    from locp_trt.method.candidates import GroupCandidates
    from locp_trt.method.ladder import Ladder, Rung

    model, shape = resnext()
    g = build_graph(model, shape)

    def lat(cfg):
        return cfg.flops / 1e3 + cfg.out_channels

    def predict(w):
        return predicted_latency_us(g, {**g.widths(), **w}, lat)

    full = g.widths()
    cut = {**full, "blocks.0.a.0": 4}
    rungs = [Rung(full, predict(full), 0.0), Rung(cut, predict(cut), 0.1)]
    cands = {gid: GroupCandidates(gid, (4, 32) if gid == "blocks.0.a.0" else (w,), 0)
             for gid, w in full.items() if g.groups[gid].prunable}
    scores = {gid: np.full(full[gid], 1.0 / full[gid]) for gid in cands}
    ladder = Ladder(rungs, graph=g, candidates=cands, scores=scores,
                    floors={gid: group_floor(g.groups[gid], 0.1) for gid in cands}, latency_us=lat,
                    predict_us=predict)
    top = rungs[0].predicted_us / rungs[1].predicted_us
    band = (1 + (top - 1) * 0.3, 1 + (top - 1) * 0.7)
    options = ladder.inside_band(1, (1.0, top), (band[0] + band[1]) / 2, band, limit=10)
    assert options, "a width between 4 and 32 lands in the band"
    for r in options:
        assert 4 < r.widths["blocks.0.a.0"] < 32 and r.widths["blocks.0.a.0"] % 4 == 0
