"""Pruning plans applied physically, saved, reloaded; importance criteria."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
from models import TINY_MODELS, randomise_bn  # tests/models.py

from locp_trt.errors import InvalidConfigError, ModelLoadError, PlanError
from locp_trt.models import get_model, model_spec
from locp_trt.prune import (
    Importance,
    PruningPlan,
    accumulate_taylor,
    apply_plan,
    group_importance,
    importance_lost,
    load_pruned,
    save_pruned,
)
from locp_trt.prune.graph import build_graph

ZOO = ["resnet20", "resnet56", "resnet110", "vgg16_bn", "mobilenetv2", "lenet5"]


@pytest.mark.parametrize("arch", ZOO)
def test_random_plan_runs_has_widths_and_reloads_identically(arch, tmp_path):
    spec = model_spec(arch)
    torch.manual_seed(0)
    model = get_model(arch)
    randomise_bn(model)
    graph = build_graph(model, spec.input_shape)
    rng = random.Random(arch)
    widths = {g.id: rng.randint(1, g.width) for g in graph.prunable()}
    pruned, plan = apply_plan(model, PruningPlan(arch, spec.input_shape, widths), spec.input_shape)
    x = torch.randn(2, *spec.input_shape)
    with torch.no_grad():
        y = pruned(x)
    assert y.shape == (2, spec.num_classes) and torch.isfinite(y).all()
    assert {k: build_graph(pruned, spec.input_shape).groups[k].width for k in widths} == widths
    assert plan.kept is not None and all(len(plan.kept[k]) == w for k, w in widths.items())
    assert plan.meta["num_classes"] == spec.num_classes
    # the input model is untouched
    assert build_graph(model, spec.input_shape).widths() == graph.widths()

    path = save_pruned(pruned, plan, tmp_path / "pruned.pt")
    assert torch.load(path, weights_only=True)["format"] == "locp_trt.pruned/1"
    loaded, plan2 = load_pruned(path)
    assert plan2.widths == plan.widths and plan2.kept == plan.kept
    with torch.no_grad():
        assert torch.equal(loaded(x), y)


def zero_channels(graph, gid: str, idxs: list[int]) -> None:
    """Make channels `idxs` of group `gid` exactly 0 wherever they are produced."""
    from locp_trt.prune.graph import ModelGraph

    assert isinstance(graph, ModelGraph)
    module, fn, _ = graph._tp[gid]
    group = graph._dg.get_pruning_group(module, fn, idxs)
    with torch.no_grad():
        for dep, dep_idxs in group:
            m = dep.target.module
            is_out = graph._dg.is_out_channel_pruning_fn(dep.handler)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and is_out:
                m.weight[dep_idxs] = 0
                if m.bias is not None:
                    m.bias[dep_idxs] = 0
            elif isinstance(m, nn.BatchNorm2d):
                m.weight[dep_idxs] = 0
                m.bias[dep_idxs] = 0


@pytest.mark.parametrize("name", ["residual", "depthwise", "concat", "se", "flatten", "split",
                                  "resnet20", "mobilenetv2", "lenet5"])
def test_pruning_zeroed_channels_keeps_outputs(name):
    if name in TINY_MODELS:
        factory, shape = TINY_MODELS[name]
        torch.manual_seed(1)
        model = factory().eval()
    else:
        shape = model_spec(name).input_shape
        torch.manual_seed(1)
        model = get_model(name)
    randomise_bn(model, 3)
    graph = build_graph(model, shape)
    rng = random.Random(name)
    kept = {}
    for g in graph.prunable():
        if g.width < 2:
            continue
        drop = sorted(rng.sample(range(g.width), rng.randint(1, g.width - 1)))
        zero_channels(graph, g.id, drop)
        kept[g.id] = [i for i in range(g.width) if i not in drop]
    x = torch.randn(3, *shape)
    with torch.no_grad():
        before = model(x)
    plan = PruningPlan(None, shape, {k: len(v) for k, v in kept.items()})
    pruned, applied = apply_plan(model, plan, shape, kept=kept)
    assert applied.kept == kept
    with torch.no_grad():
        after = pruned(x)
    assert after.shape == before.shape
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_pruning_nonzero_channels_changes_outputs():
    """The zeroed-channel test above can fail: pruning live channels does change the output."""
    factory, shape = TINY_MODELS["residual"]
    torch.manual_seed(1)
    model = factory().eval()
    x = torch.randn(3, *shape)
    pruned, _ = apply_plan(model, PruningPlan(None, shape, {"stem": 4}), shape)
    assert not torch.allclose(pruned(x), model(x), atol=1e-3)


# ---- plan data ---------------------------------------------------------------------------------
def test_plan_json_roundtrip(tmp_path):
    plan = PruningPlan("resnet20", (3, 32, 32), {"conv1": 8}, kept={"conv1": list(range(8))},
                       meta={"num_classes": 10})
    assert plan.to_json()["schema"] == "locp_trt.plan/1"
    assert PruningPlan.from_json(plan.to_json()) == plan
    assert PruningPlan.from_json(json.dumps(plan.to_json())) == plan
    assert PruningPlan.load(plan.save(tmp_path / "plan.json")) == plan
    with pytest.raises(PlanError, match="schema 'other/2'"):
        PruningPlan.from_json({"schema": "other/2"})
    with pytest.raises(PlanError, match="not valid JSON"):
        PruningPlan.from_json("{nope")
    with pytest.raises(PlanError, match="plan file not found"):
        PruningPlan.load(tmp_path / "missing.json")


def test_plan_validate_messages():
    factory, shape = TINY_MODELS["residual"]
    graph = build_graph(factory(), shape)
    PruningPlan(None, shape, {"stem": 3}).validate(graph)
    cases = [
        ({"stme": 3}, "unknown channel group 'stme' \\(did you mean stem"),
        ({"stem": 0}, "width 0 for group 'stem' is outside 1..8"),
        ({"a1": 9}, "width 9 for group 'a1' is outside 1..6"),
        ({"fc": 2}, "cannot be pruned \\(model output\\)"),
    ]
    for widths, msg in cases:
        with pytest.raises(PlanError, match=msg):
            PruningPlan(None, shape, widths).validate(graph)
    with pytest.raises(PlanError, match="input shape"):
        PruningPlan(None, (3, 9, 9), {}).validate(graph)
    with pytest.raises(PlanError, match="must be 3 distinct values"):
        PruningPlan(None, shape, {"stem": 3}, kept={"stem": [0, 0, 1]}).validate(graph)


def test_save_needs_kept_and_load_needs_an_arch(tmp_path):
    factory, shape = TINY_MODELS["depthwise"]
    model = factory().eval()
    with pytest.raises(PlanError, match="no kept channel indices"):
        save_pruned(model, PruningPlan(None, shape, {"expand": 4}), tmp_path / "x.pt")
    pruned, plan = apply_plan(model, PruningPlan(None, shape, {"expand": 4}), shape)
    path = save_pruned(pruned, plan, tmp_path / "p.pt")
    with pytest.raises(ModelLoadError, match="names no architecture.*--arch"):
        load_pruned(path)
    loaded, _ = load_pruned(path, arch_factory=factory)
    x = torch.randn(1, *shape)
    assert torch.equal(loaded(x), pruned(x))


# ---- importance --------------------------------------------------------------------------------
def test_l1_importance_keeps_the_largest_channels():
    factory, shape = TINY_MODELS["flatten"]
    model = factory().eval()
    with torch.no_grad():
        for c, scale in enumerate([0.1, 3.0, 0.2, 2.0]):
            model.conv.weight[c] = scale
            model.fc1.weight[:, c * 16:(c + 1) * 16] = scale
    graph = build_graph(model, shape)
    scores = group_importance(model, graph, "conv", Importance.L1)
    assert scores.shape == (4,) and np.isclose(scores.sum(), 1.0)
    assert list(np.argsort(-scores)) == [1, 3, 2, 0]
    _, plan = apply_plan(model, PruningPlan(None, shape, {"conv": 2}), shape)
    assert plan.kept["conv"] == [1, 3]
    assert importance_lost(scores, 2) == pytest.approx(scores[0] + scores[2])
    assert importance_lost(scores, 4) == 0.0 and importance_lost(scores, 0) == pytest.approx(1.0)
    with pytest.raises(InvalidConfigError, match="keep must be in 0..4"):
        importance_lost(scores, 5)


def test_bn_scale_l2_and_taylor_importance():
    factory, shape = TINY_MODELS["residual"]
    torch.manual_seed(0)
    model = factory().eval()
    randomise_bn(model)
    graph = build_graph(model, shape)
    with torch.no_grad():
        model.bn.weight.copy_(torch.arange(1.0, 9.0))
    bn = group_importance(model, graph, "stem", Importance.BN_SCALE)
    assert list(np.argsort(bn)) == list(range(8))  # only the stem BN is in the group
    l2 = group_importance(model, graph, "a1", Importance.L2)
    assert l2.shape == (6,) and np.isclose(l2.sum(), 1.0)
    with pytest.raises(InvalidConfigError, match="no BatchNorm in the group"):
        group_importance(model, graph, "a1", Importance.BN_SCALE)
    with pytest.raises(InvalidConfigError, match="needs gradients.*accumulate_taylor"):
        group_importance(model, graph, "a1", Importance.TAYLOR)
    batches = [(torch.randn(4, *shape), torch.randint(0, 4, (4,))) for _ in range(2)]
    assert accumulate_taylor(model, batches, nn.functional.cross_entropy) == 2
    taylor = group_importance(model, graph, "a1", "taylor", grads_available=True)
    assert taylor.shape == (6,) and np.isclose(taylor.sum(), 1.0) and (taylor >= 0).all()
    _, plan = apply_plan(model, PruningPlan(None, shape, {"a1": 3}), shape, importance=Importance.TAYLOR)
    assert plan.kept["a1"] == sorted(np.argsort(-taylor, kind="stable")[:3].tolist())
    with pytest.raises(InvalidConfigError, match="unknown importance 'l3'"):
        Importance.parse("l3")
