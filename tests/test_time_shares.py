"""The share of the end-to-end time pruning can change (issue 17, class 7): the layer sum of the
prunable layers over the unpruned model's measured time, the fixed layers' layer sum, and the rest
outside every conv/linear (SE gates, activations, pooling). Checked on a tiny SE model under a
deterministic formula runtime whose end-to-end time holds a fixed share no layer owns."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn as nn

from locp_trt.latency.e2e import TimeShares
from locp_trt.method.config import OptimizeConfig, UnreachableTargetError
from locp_trt.method.loop import Optimizer
from locp_trt.prune.graph import build_graph
from locp_trt.report.content import result_block
from locp_trt.report.files import summary_table

SHAPE = (3, 8, 8)
OUTSIDE_US = 400.0  # the SE gate, activations and pooling: no conv/linear layer owns this time


class SEWithSkip(nn.Module):
    """conv -> squeeze-and-excitation gate -> linear head, plus a linear on the pooled image added
    to the logits: the head's output is the model output and the skip reads the image, so the
    skip is a layer no plan can change (a fixed layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.se_reduce = nn.Linear(16, 4)
        self.se_expand = nn.Linear(4, 16)
        self.fc = nn.Linear(16, 3)
        self.skip = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        s = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(y.mean((2, 3))))))
        y = y * s[:, :, None, None]
        return self.fc(y.mean((2, 3))) + self.skip(x.mean((2, 3)))


def layer_us(cfg) -> float:
    """A layer's time: a launch cost plus its FLOPs (deterministic: a recorded-style table)."""
    return 5.0 + cfg.flops / 100.0


class Runtime:
    """End to end: the layer sum at the module's widths plus `OUTSIDE_US`, with 1% seeded noise."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def true_us(self, module: nn.Module) -> float:
        graph = build_graph(module, SHAPE)
        return sum(layer_us(c) for c in graph.layer_configs({}).values()) + OUTSIDE_US

    def prepare(self, module: nn.Module):
        true_us = self.true_us(module)
        return lambda warmup, iters: list(true_us * (1 + 0.01 * self.rng.standard_normal(iters)))


def model() -> nn.Module:
    torch.manual_seed(0)
    return SEWithSkip().eval()


def optimizer(speedup: float, tmp_path) -> Optimizer:
    return Optimizer(model(), SHAPE, OptimizeConfig(speedup=speedup, steps=1, extra_steps=1),
                     latency_us=layer_us, prepare_model=Runtime().prepare, out_dir=tmp_path,
                     log=lambda _m: None, progress=False)


def test_the_split_names_prunable_and_fixed_layers_and_the_rest():
    graph = build_graph(model(), SHAPE)
    assert graph.prunable_layers() == ["conv", "se_reduce", "se_expand", "fc"]
    cfgs = graph.layer_configs({})
    prunable = sum(layer_us(cfgs[n]) for n in ("conv", "se_reduce", "se_expand", "fc"))
    fixed = layer_us(cfgs["skip"])
    shares = TimeShares.of(graph, layer_us, prunable + fixed + OUTSIDE_US, measured=True)
    assert shares.prunable_us == pytest.approx(prunable) and shares.fixed_us == pytest.approx(fixed)
    assert shares.rest_share == pytest.approx(OUTSIDE_US / (prunable + fixed + OUTSIDE_US))
    assert shares.prunable_share + shares.fixed_share + shares.rest_share == pytest.approx(1.0)
    assert shares.fixed_layers == (("skip", round(fixed, 3), "model output"),)
    assert TimeShares.from_json(shares.to_json()) == shares
    text = shares.sentence()
    assert f"the prunable layers account for {shares.prunable_share:.0%} of the unpruned model's measured time" in text
    assert "skip: model output" in text and f"{shares.rest_share:.0%} is outside the conv/linear layers" in text
    # layers timed alone costing more than the whole model (fusion): said as a share of the layer sum
    fused = TimeShares.of(graph, layer_us, (prunable + fixed) / 2, measured=True)
    assert fused.rest_share < 0 and "of the layer sum (200% of the measured time" in fused.sentence()
    assert fused.sentence().endswith(f"; fixed layers {1 - fused.prunable_of_layer_sum:.0%} (skip: model output)")
    assert "the layers timed alone sum to 200% of it" in fused.brief()
    # every layer touched by some prunable group (the SE block of tests/models.py): none fixed
    from models import SEBlock  # tests/models.py

    se = build_graph(SEBlock().eval(), (3, 6, 6))
    assert len(se.prunable_layers()) == len(se.layers)
    assert "; no fixed layers, and" in TimeShares.of(se, layer_us, 1000.0, measured=True).sentence()


def test_a_refused_target_names_the_prunable_share(tmp_path):
    with pytest.raises(UnreachableTargetError) as refused:
        optimizer(20.0, tmp_path).run()
    text = str(refused.value)
    share = float(re.search(r"the prunable layers account for (\d+)% of the unpruned model's measured time",
                            text).group(1)) / 100
    graph = build_graph(model(), SHAPE)
    truth = TimeShares.of(graph, layer_us, Runtime().true_us(model()), measured=True).prunable_share
    assert share == pytest.approx(truth, abs=0.03)  # the baseline is measured (1% noise)
    assert "skip: model output" in text


def test_a_missed_target_says_what_share_was_prunable(tmp_path):
    """Just past what the floor allows (inside the 10% slack the loop accepts): tried, missed, and
    the report's why and summary name the share; report.json's latency model holds the split."""
    with pytest.raises(UnreachableTargetError) as refused:
        optimizer(20.0, tmp_path / "probe").run()
    floor = float(re.search(r"ask for at most ([0-9.]+)x", str(refused.value)).group(1))
    opt = optimizer(floor * 1.07, tmp_path / "run")
    result = opt.run()
    assert not result.met_target
    shares = result.latency_model["time_shares"]
    assert shares["measured"] and shares["fixed_layers"][0]["layer"] == "skip"
    assert shares["rest_share"] > 0.3 and 0 < shares["prunable_share"] < 0.7
    block = result_block(opt.config, result, result.confirmation)
    assert f"the prunable layers account for {shares['prunable_share']:.0%}" in block["why_missed"]
    table = summary_table({"result": block, "history": [], "fingerprint": "a formula runtime"})
    assert (f"prunable layers {shares['prunable_share']:.0%}, fixed layers {shares['fixed_share']:.0%} "
            f"(skip {shares['fixed_layers'][0]['us']:.1f} µs), outside the layers "
            f"{shares['rest_share']:.0%}") in table


def test_the_profile_says_which_ops_hold_the_time_outside_the_layers():
    """On a runtime that profiles nodes (ONNX Runtime), the unpruned model's nodes no layer
    matched are summed per op: an SE block's Mul and Sigmoid, the pooling (recorded-style nodes)."""
    from locp_trt.latency.runtimes.onnxrt import NodeTime
    from locp_trt.report.content import match_nodes, outside_layers

    graph = build_graph(model(), SHAPE)
    cfgs = graph.layer_configs({})
    nodes = [NodeTime("conv", "FusedConv", ((1, 3, 8, 8), (16, 3, 3, 3), (16,)), 20.0),
             NodeTime("pool", "GlobalAveragePool", ((1, 16, 8, 8),), 3.0),
             NodeTime("se1", "Gemm", ((1, 16), (4, 16), (4,)), 2.0),
             NodeTime("se2", "Gemm", ((1, 4), (16, 4), (16,)), 2.0),
             NodeTime("gate", "Sigmoid", ((1, 16),), 1.5),
             NodeTime("mul", "Mul", ((1, 16, 8, 8), (1, 16, 1, 1)), 6.5),
             NodeTime("pool2", "GlobalAveragePool", ((1, 16, 8, 8),), 3.0),
             NodeTime("fc", "Gemm", ((1, 16), (3, 16), (3,)), 2.0),
             NodeTime("skip", "Gemm", ((1, 3), (3, 3), (3,)), 1.0),
             NodeTime("add", "Add", ((1, 3), (1, 3)), 0.5)]
    assert set(match_nodes(cfgs, nodes)) == set(cfgs)  # every layer found
    out = outside_layers(cfgs, nodes)
    assert out["by_op_us"] == {"Mul": 6.5, "GlobalAveragePool": 6.0, "Sigmoid": 1.5, "Add": 0.5}
    assert out["outside_us"] == 14.5 and out["layers_us"] == 27.0 and out["profiled_us"] == 41.5
    table = summary_table({"result": {"speedup": 1.0, "speedup_kind": "measured", "baseline_us": 41.0,
                                      "final_us": 41.0, "flops_before": 0, "flops_after": 0},
                           "history": [], "fingerprint": "recorded", "time_outside_layers": out})
    assert ("outside the conv/linear layers, profiled inside the unpruned model: 14.5 of 41.5 µs "
            "(Mul 6.5 µs, GlobalAveragePool 6.0 µs, Sigmoid 1.5 µs, Add 0.5 µs)") in table
