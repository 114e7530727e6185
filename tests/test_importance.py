"""Taylor importance over several batches (`taylor_scores`) on tiny models, on the CPU.

The reference for every score is autograd itself: a gate z (ones) multiplied into the group's
channels where each consumer reads them; dL/dz per batch, squared and averaged, is what the
criterion promises.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn as nn
from models import TINY_MODELS, randomise_bn  # tests/models.py
from searches import greedy
from torch.utils.data import DataLoader, TensorDataset

from locp_trt.errors import DatasetError, InvalidConfigError
from locp_trt.prune.graph import build_graph
from locp_trt.prune.importance import most_important, taylor_scores
from locp_trt.prune.plan import PruningPlan, apply_plan


def conv_gate(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x * z[None, :, None, None]


def linear_gate(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x * z


#: (tiny model, group, consumer module -> how the gate enters its input)
GATES: dict[str, tuple[str, str, dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]]] = {
    "flatten (channel -> 16 linear inputs)": (
        "flatten", "conv", {"fc1": lambda z, x: x * z.repeat_interleave(16)}),
    "residual stream (three readers)": ("residual", "stem", {"a1": conv_gate, "b1": conv_gate, "fc": linear_gate}),
    "depthwise pass-through, BN": ("depthwise", "expand", {"project": conv_gate}),
    "concat offset": (
        "concat", "right", {"merge": lambda z, x: x * torch.cat([torch.ones(6), z])[None, :, None, None]}),
    "squeeze-excitation": ("se", "conv", {"se_reduce": linear_gate, "fc": linear_gate}),
}


def batches_for(model: nn.Module, shape: tuple[int, ...], n: int, seed: int = 0) -> list[tuple]:
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    with torch.no_grad():
        k = model.eval()(torch.zeros(1, *shape)).shape[1]
    model.train(was_training)
    return [(torch.randn(6, *shape, generator=gen), torch.randint(0, k, (6,), generator=gen)) for _ in range(n)]


def gated_reference(model: nn.Module, width: int, hooks: dict, batches: list[tuple]) -> np.ndarray:
    """mean over batches of (dL/dz)^2, normalised: z gates the channels at every reader."""
    squares = []
    for x, y in batches:
        z = torch.ones(width, dtype=torch.float64, requires_grad=True)
        handles = [model.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, fn=fn, z=z: (fn(z.float(), args[0]),)) for name, fn in hooks.items()]
        try:
            loss = nn.functional.cross_entropy(model.eval()(x), y)
            (grad,) = torch.autograd.grad(loss, z)
        finally:
            for h in handles:
                h.remove()
        squares.append(grad.detach().numpy() ** 2)
    mean = np.mean(squares, axis=0)
    return mean / mean.sum()


@pytest.mark.parametrize("case", list(GATES))
def test_taylor_scores_equal_the_gate_derivative(case):
    arch, gid, hooks = GATES[case]
    factory, shape = TINY_MODELS[arch]
    torch.manual_seed(0)
    model = factory().eval()
    randomise_bn(model)
    graph = build_graph(model, shape)
    batches = batches_for(model, shape, 3)
    scores = taylor_scores(model, graph, batches, batches=3, groups=[gid])
    expected = gated_reference(model, graph.groups[gid].width, hooks, batches)
    assert scores[gid].dtype == np.float64 and np.isclose(scores[gid].sum(), 1.0)
    np.testing.assert_allclose(scores[gid], expected, rtol=1e-4, atol=1e-9)


def test_zeroed_channels_score_zero_and_scores_are_deterministic():
    factory, shape = TINY_MODELS["flatten"]
    torch.manual_seed(1)
    model = factory().eval()
    with torch.no_grad():
        model.conv.weight[1] = 0.0  # channel 1 produces nothing
        model.conv.bias[1] = 0.0
        model.fc1.weight[:, 3 * 16:] = 0.0  # nothing reads channel 3
    graph = build_graph(model, shape)
    data = TensorDataset(torch.randn(64, *shape), torch.randint(0, 3, (64,)))
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    first = taylor_scores(model, graph, loader, batches=4)
    assert set(first) == {g.id for g in graph.prunable()} == {"conv", "fc1"}
    conv = first["conv"]
    assert conv.shape == (4,) and (conv >= 0).all() and np.isclose(conv.sum(), 1.0)
    assert conv[1] == 0.0 and conv[3] == 0.0 and conv[0] > 0 and conv[2] > 0
    assert most_important(conv, 2) == [0, 2]
    loader.generator.manual_seed(0)  # the same batches again: the same scores, bit for bit
    again = taylor_scores(model, graph, loader, batches=4)
    for gid in first:
        np.testing.assert_array_equal(first[gid], again[gid])
    # more batches average more: a different (still valid) estimate
    more = taylor_scores(model, graph, loader, batches=8)["fc1"]
    assert more.shape == (5,) and np.isclose(more.sum(), 1.0) and not np.array_equal(more, first["fc1"])


def test_a_taylor_scorer_scores_the_same_batches_however_far_its_loader_has_gone():
    """A resumed run must score its next step as the uninterrupted run did: the scorer draws its
    batches once, with the random state fixed, and keeps them."""
    from locp_trt.prune.importance import TaylorScorer

    factory, shape = TINY_MODELS["flatten"]
    torch.manual_seed(1)
    model = factory().eval()
    graph = build_graph(model, shape)
    data = TensorDataset(torch.randn(64, *shape), torch.randint(0, 3, (64,)))

    def scores(consumed: int) -> dict[str, np.ndarray]:
        loader = DataLoader(data, batch_size=8, shuffle=True)  # shuffles from torch's global RNG
        torch.manual_seed(consumed)
        for _ in range(consumed):  # epochs of fine-tuning before the scorer's first use
            list(loader)
        scorer = TaylorScorer(loader, batches=3, seed=5)
        first = scorer.scores(model, graph, ["conv", "fc1"])
        list(loader)  # more fine-tuning between two steps
        again = scorer.scores(model, graph, ["conv", "fc1"])
        for gid in first:
            np.testing.assert_array_equal(first[gid], again[gid])
        return first

    a, b = scores(0), scores(3)
    for gid in a:
        np.testing.assert_array_equal(a[gid], b[gid])
    state = torch.random.get_rng_state()
    TaylorScorer(DataLoader(data, batch_size=8, shuffle=True), batches=2).scores(model, graph, ["conv"])
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone


def test_taylor_scores_leave_the_model_as_they_found_it():
    factory, shape = TINY_MODELS["residual"]
    torch.manual_seed(2)
    model = factory().train()
    graph = build_graph(model, shape)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.fc.weight.grad = torch.full_like(model.fc.weight, 7.0)  # a caller's gradient
    model.stem.weight.requires_grad_(False)  # a frozen layer
    scores = taylor_scores(model, graph, batches_for(model, shape, 2), batches=5)  # loader ends first
    assert set(scores) == {"stem", "a1", "b1"}
    assert all((s >= 0).all() and np.isclose(s.sum(), 1.0) for s in scores.values())
    assert model.training and not model.stem.weight.requires_grad
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 7.0))
    assert model.a1.weight.grad is None
    for k, v in model.state_dict().items():  # eval forward: BN running stats unchanged
        assert torch.equal(v, state[k]), k


def test_taylor_scores_choose_the_channels_apply_plan_keeps():
    factory, shape = TINY_MODELS["depthwise"]
    torch.manual_seed(3)
    model = factory().eval()
    randomise_bn(model)
    graph = build_graph(model, shape)
    scores = taylor_scores(model, graph, batches_for(model, shape, 2), batches=2)
    kept = {"expand": most_important(scores["expand"], 5)}
    pruned, plan = apply_plan(model, PruningPlan(None, shape, {"expand": 5}), shape, kept=kept)
    assert plan.kept["expand"] == kept["expand"] and pruned.expand.out_channels == 5


def test_every_tiny_model_can_be_scored():
    for arch, (factory, shape) in TINY_MODELS.items():
        torch.manual_seed(4)
        model = factory().eval()
        graph = build_graph(model, shape)
        scores = taylor_scores(model, graph, batches_for(model, shape, 1), batches=1)
        assert set(scores) == {g.id for g in graph.prunable()}, arch
        for gid, s in scores.items():
            assert s.shape == (graph.groups[gid].width,) and (s >= 0).all(), (arch, gid)


def test_taylor_scores_errors():
    factory, shape = TINY_MODELS["flatten"]
    model = factory()
    graph = build_graph(model, shape)
    with pytest.raises(InvalidConfigError, match="batches >= 1, got 0"):
        taylor_scores(model, graph, [], batches=0)
    with pytest.raises(InvalidConfigError, match="built for another model"):
        taylor_scores(factory(), graph, [])
    with pytest.raises(DatasetError, match="yielded no batch"):
        taylor_scores(model, graph, [])
    with pytest.raises(InvalidConfigError, match="keep must be in 0..2"):
        most_important([0.5, 0.5], 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_taylor_scores_on_cuda_match_the_cpu():
    factory, shape = TINY_MODELS["residual"]
    torch.manual_seed(5)
    model = factory().eval()
    graph = build_graph(model, shape)
    batches = batches_for(model, shape, 2)
    cpu = taylor_scores(model, graph, batches, batches=2)
    gpu = taylor_scores(model, graph, batches, batches=2, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    for gid in cpu:
        np.testing.assert_allclose(gpu[gid], cpu[gid], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("layer", [nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.Conv2d(4, 6, 1),
                                   nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2), nn.Linear(4, 3)],
                         ids=["grouped", "plain", "transposed-grouped", "linear"])
def test_input_gates_of_every_reader_kind(layer):
    """The per-input-channel sum of w * dL/dw is dL/dz for a gate z on that input channel."""
    from locp_trt.prune.importance import _input_gates

    torch.manual_seed(6)
    x = torch.randn(3, 4, 5, 5) if not isinstance(layer, nn.Linear) else torch.randn(3, 4)
    z = torch.ones(4, requires_grad=True)
    gate = z if isinstance(layer, nn.Linear) else z[None, :, None, None]
    layer.zero_grad()
    (layer(x * gate) ** 2).sum().backward()
    torch.testing.assert_close(_input_gates(layer), z.grad)


# ---- weighing groups against each other (issue 10: the trunk was cut first) ---------------------
def test_reach_counts_the_layers_a_group_touches_and_keeps_rankings():
    from locp_trt.models import get_model
    from locp_trt.prune.importance import (
        Importance,
        channel_reach,
        group_importance,
        weigh_by_reach,
    )

    torch.manual_seed(0)
    model = get_model("resnet20")
    graph = build_graph(model, (3, 16, 16))
    ids = [g.id for g in graph.prunable()]
    reach = channel_reach(graph, ids)
    trunk, inner = "layer3.0.conv2", "layer3.1.conv1"  # stage-3 residual trunk vs one block's conv
    assert reach[inner] == 2 and reach[trunk] >= 3 * 2  # every block of the stage reads the trunk
    scores = {g: group_importance(model, graph, g, Importance.L1) for g in ids}
    weighed = weigh_by_reach(scores, graph)
    assert np.mean([weighed[g].sum() for g in ids]) == pytest.approx(1.0)
    assert weighed[trunk].sum() / weighed[inner].sum() == pytest.approx(reach[trunk] / reach[inner])
    for g in ids:  # a group's own ranking is unchanged: the same channels are kept
        assert list(np.argsort(weighed[g], kind="stable")) == list(np.argsort(scores[g], kind="stable"))


def test_weighed_search_keeps_residual_trunks_wider():
    """A latency-greedy search with per-group fractions cuts the trunks (each saves the time of
    every layer it touches) before anything else; weighed by reach it leaves them wider."""
    from locp_trt.latency.config import LayerConfig
    from locp_trt.method.benefit import predicted_latency_us
    from locp_trt.method.candidates import discover_candidates
    from locp_trt.models import get_model
    from locp_trt.prune.importance import Importance, group_importance, weigh_by_reach

    torch.manual_seed(0)
    model = get_model("resnet20")
    graph = build_graph(model, (3, 16, 16))

    def flops_us(cfg: LayerConfig) -> float:  # compute-bound stand-in: time follows FLOPs
        return cfg.flops / 1e6

    cands = discover_candidates(graph, {}, flops_us, progress=False)
    scores = {g: group_importance(model, graph, g, Importance.L1) for g in cands}
    target = 0.5 * predicted_latency_us(graph, {}, flops_us)
    plain = greedy(graph, {}, cands, scores, flops_us, target)
    weighed = greedy(graph, {}, cands, weigh_by_reach(scores, graph), flops_us, target)
    assert plain.met_target and weighed.met_target
    trunks = [g.id for g in graph.prunable() if len(graph.touched_layers(g.id)) > 2]
    assert trunks
    kept = lambda res: sum(res.widths.get(t, graph.groups[t].width) / graph.groups[t].width  # noqa: E731
                           for t in trunks) / len(trunks)
    assert kept(weighed) > kept(plain) + 0.2, (kept(weighed), kept(plain))
