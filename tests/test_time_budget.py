"""Issue 17, class 5: dense concatenation graphs end in bounded time (`--time-budget-s`) with the
best checkpoint and an honest status, and the last step's probes stop once inside the band.

Everything here runs on a formula latency and a noise-free fake runtime with a fake clock that the
run's own log lines move: no live timing is asserted."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn as nn

from locp_trt.errors import InvalidConfigError
from locp_trt.latency.compare import CompareRule, compare
from locp_trt.method.candidates import discover_candidates
from locp_trt.method.config import GeometricSchedule, OptimizeConfig
from locp_trt.method.landing import Probe, land
from locp_trt.method.loop import Optimizer
from locp_trt.prune.graph import build_graph
from locp_trt.report.content import result_block


class DenseLayer(nn.Module):
    """BN-ReLU-conv over the concat of every earlier output of its block."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(torch.relu(self.bn(torch.cat(feats, 1))))


class DenseLike(nn.Module):
    """Two dense blocks of three layers (growth 6) with a 1x1 transition: DenseNet in small."""

    def __init__(self, stem: int = 8, growth: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        c = stem
        self.block1 = nn.ModuleList(DenseLayer(c + i * growth, growth) for i in range(3))
        c += 3 * growth
        self.transition = nn.Conv2d(c, c // 2, 1, bias=False)
        c //= 2
        self.block2 = nn.ModuleList(DenseLayer(c + i * growth, growth) for i in range(3))
        c += 3 * growth
        self.norm = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 5)

    @staticmethod
    def _block(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in layers:
            feats.append(layer(feats))
        return torch.cat(feats, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._block(self.block1, self.stem(x))
        x = nn.functional.avg_pool2d(self.transition(x), 2)
        x = torch.relu(self.norm(self._block(self.block2, x)))
        return self.fc(x.mean((2, 3)))


SHAPE = (3, 8, 8)


def layer_us(cfg) -> float:
    """A formula staircase: 4-channel tiles of work per layer, plus a fixed launch cost."""
    return 1.0 + math.ceil(cfg.in_channels / 4) * math.ceil(cfg.out_channels / 4) * cfg.kernel ** 2 / 4


def prepare(module: nn.Module):
    """A noise-free 'runtime': the model's layer sum plus a fixed overhead (µs), every sample the
    same, so each comparison's interval is a point and every verdict is exact."""
    graph = build_graph(module, SHAPE)
    us = 20.0 + sum(layer_us(c) for c in graph.layer_configs({}).values())
    return lambda warmup, iters: [us] * iters


class Clock:
    """Seconds that jump past any budget when a log line matches `trigger`."""

    def __init__(self, trigger: str) -> None:
        self.now, self.trigger, self.lines = 0.0, re.compile(trigger), []

    def __call__(self) -> float:
        return self.now

    def log(self, line: str) -> None:
        self.lines.append(line)
        if self.trigger.search(line):
            self.now = 1e6


def optimizer(tmp_path, clock: Clock, budget: float | None, speedup: float = 1.6) -> Optimizer:
    torch.manual_seed(0)
    cfg = OptimizeConfig(speedup=speedup, time_budget_s=budget, compare=CompareRule(max_rounds=3))
    return Optimizer(DenseLike().eval(), SHAPE, cfg, latency_us=layer_us, prepare_model=prepare,
                     out_dir=tmp_path, log=clock.log, progress=False, clock=clock,
                     schedule=GeometricSchedule(3, 1))


def test_a_budget_spent_after_step_1_emits_step_1_and_says_why(tmp_path):
    clock = Clock(r"^step 1: [\d.]+x")  # the budget runs out as step 1 is recorded
    result = optimizer(tmp_path / "budget", clock, budget=60).run()
    assert [h.step for h in result.history] == [0, 1]
    assert result.chosen_step == 1 and result.confirmation is not None
    # Step 1 aims at the first of three goals (1.6 ** (1/3)): short of the target, an honest miss.
    assert result.confirmation.speedup < 1.6 and not result.met_target and result.status == "missed"
    assert result.stop_reason.startswith("the time budget (--time-budget-s 60) was spent after step 1")
    assert "the final check measured" in result.stop_reason
    assert any("ending with the best checkpoint" in line for line in clock.lines)
    # The same run without a budget goes on past step 1: the budget is what ended it.
    free = optimizer(tmp_path / "free", Clock(r"$^"), budget=None).run()
    assert max(h.step for h in free.history) > 1 and "time budget" not in free.stop_reason


def test_a_budget_spent_while_landing_keeps_the_probes_taken(tmp_path):
    clock = Clock(r"^step 1: probe ")  # spent by the first probe of step 1
    result = optimizer(tmp_path, clock, budget=60).run()
    step1 = result.history[1]
    assert [h.step for h in result.history] == [0, 1] and len(step1.probes) == 1
    assert "while landing" in step1.search
    assert "spent after step 1" in result.stop_reason and result.status == "missed"


def test_a_step_cut_short_that_reaches_the_target_says_so(tmp_path):
    """Step 1 of one (no fine-tuning) meets the target on its first probe, above a 1% band, and
    the budget ends the landing there: the stop reason says the budget cut the step's search."""
    clock = Clock(r"^step 1: probe ")
    torch.manual_seed(0)
    cfg = OptimizeConfig(speedup=1.3, tolerance=0.01, time_budget_s=60, compare=CompareRule(max_rounds=3))
    result = Optimizer(DenseLike().eval(), SHAPE, cfg, latency_us=layer_us, prepare_model=prepare,
                       out_dir=tmp_path, log=clock.log, progress=False, clock=clock).run()
    assert [h.step for h in result.history] == [0, 1] and len(result.history[1].probes) == 1
    assert result.stop_reason.startswith("target reached at step 1")
    assert "the time budget (--time-budget-s 60) cut step 1's search short" in result.stop_reason


def test_a_budget_spent_before_step_1_emits_the_unpruned_model(tmp_path):
    clock = Clock(r"^baseline: ")
    opt = optimizer(tmp_path, clock, budget=60)
    result = opt.run()
    assert [h.step for h in result.history] == [0] and result.chosen_step == 0
    assert not result.met_target and "spent before step 1" in result.stop_reason
    block = result_block(opt.config, result, result.confirmation)  # the report says what it was
    assert block["status"] == "missed" and block["speedup_kind"].startswith("measured (the unpruned model")
    assert "spent before step 1" in block["why_missed"]


def test_discovery_stops_once_spent_and_leaves_the_rest_at_their_width():
    graph = build_graph(DenseLike().eval(), SHAPE)
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return True

    found = discover_candidates(graph, graph.widths(), layer_us, progress=False, stop=stop)
    narrowed = [g for g, c in found.items() if len(c.widths) > 1]
    skipped = [g for g, c in found.items() if c.skipped]
    assert len(narrowed) == 1 and asked  # the first group with a candidate, then the stop
    assert skipped and all(found[g].widths == (graph.widths()[g],) for g in skipped)
    assert len(narrowed) + len(skipped) + sum(1 for c in found.values() if not c.skipped and
                                              len(c.widths) == 1) == len(found)


def measured(k: int, speedup: float, half: float = 0.01) -> Probe:
    return Probe(k, speedup, speedup * (1 - half), speedup * (1 + half), "unclear", 100.0 - k, rounds=5)


def test_land_takes_a_measured_probe_inside_the_band_at_once():
    pred = [100.0 - 5 * k for k in range(11)]
    curve = {k: 1.0 + 0.06 * k for k in range(11)}  # the aim 1.575 is never hit exactly
    calls: list[int] = []

    def probe(k: int) -> Probe:
        calls.append(k)
        return measured(k, curve[k])

    got = land(pred, 1.0, 1.575, probe, band=(1.5, 1.65))
    assert got.reached_aim and 1.5 <= got.probe.speedup <= 1.65 and calls[-1] == got.k
    # Without the band the search goes on to bracket the aim.
    assert len(land(pred, 1.0, 1.575, probe).probes) > len(got.probes)
    # A probe whose interval straddles the band's edge is not taken at once.
    wide = land(pred, 1.0, 1.575, lambda k: measured(k, curve[k], half=0.2), band=(1.5, 1.65), max_probes=3)
    assert len(wide.probes) == 3


def test_land_stops_when_told_after_one_probe():
    pred = [100.0 - 5 * k for k in range(11)]
    got = land(pred, 1.0, 3.0, lambda k: measured(k, 1.0 + 0.05 * k), stop=lambda: True)
    assert got.stopped and len(got.probes) == 1 and not got.reached_aim


def test_compare_stops_once_the_interval_is_inside_the_band():
    def reference():  # rounds alternate 1.55x and 1.59x: about 1.57x, never clear of 1.575x
        calls = iter(range(10_000))
        return lambda warmup, iters: [155.0 if next(calls) % 2 == 0 else 159.0] * iters

    def candidate(warmup, iters):
        return [100.0] * iters

    rule = CompareRule(max_rounds=12, resolution=0.001)
    banded = compare(reference(), candidate, rule, threshold=1.575, band=(1.5, 1.65))
    plain = compare(reference(), candidate, rule, threshold=1.575)
    assert banded.rounds == rule.min_rounds and 1.5 <= banded.low and banded.high <= 1.65
    assert plain.rounds == rule.max_rounds and plain.verdict.value == "unclear"


def test_time_budget_must_be_positive():
    with pytest.raises(InvalidConfigError, match="--time-budget-s must be a positive"):
        OptimizeConfig(speedup=1.5, time_budget_s=0)


def test_the_option_reaches_the_job_and_bad_values_are_one_error_line(monkeypatch, tmp_path, capsys):
    from test_cli_optimize_args import job_for

    from locp_trt.cli import main

    assert job_for(monkeypatch, tmp_path / "a").method.time_budget_s is None
    assert job_for(monkeypatch, tmp_path / "b", "--time-budget-s", "300").method.time_budget_s == 300.0
    assert main(["optimize", "example", "--out", str(tmp_path / "o"), "--time-budget-s", "0"]) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "--time-budget-s" in line and "expected a positive number" in line and "Traceback" not in err


def test_a_spent_budget_keeps_the_final_check_to_its_first_builds():
    from locp_trt.method.reference import Reference

    def prepare_model(module):  # each build: rounds alternate 1.45x and 1.55x against the reference
        calls = iter(range(10_000))
        if module.out_features == 3:
            return lambda warmup, iters: [100.0] * iters
        return lambda warmup, iters: [145.0 if next(calls) % 2 == 0 else 155.0] * iters

    ref = Reference(nn.Linear(2, 2), CompareRule(max_rounds=4, build_rounds=4), prepare_model)
    candidate = nn.Linear(2, 3)  # told apart from the reference by its 3 outputs
    extended = ref.compare(candidate, threshold=1.5, builds=3)
    kept = ref.compare(candidate, threshold=1.5, builds=3, extend=False)
    assert extended.verdict.value == kept.verdict.value == "unclear"
    assert len(extended.builds) > 3 and len(kept.builds) == 3  # more only while the budget lasts


def test_a_probe_timed_in_a_disturbed_state_is_timed_again():
    """The machine's state, timing by timing: quiet (reference 100 µs, candidate 50 µs: 2x) or
    disturbed (140 and 90 µs: the candidate slowed more, as on the H200 host). With a quiet slack
    a disturbed probe is timed again, twice at most, and the quietest reading kept."""
    from locp_trt.method.reference import Reference

    def run(states: str, quiet: float) -> list[float]:
        at = {"i": -1}

        def slow() -> bool:
            return states[min(at["i"], len(states) - 1)] == "s"

        def prepare_model(module):  # a fresh candidate build per timing: the state may change
            at["i"] += 1
            return lambda warmup, iters: [90.0 if slow() else 50.0] * iters

        ref = Reference(nn.Linear(2, 2), CompareRule(max_rounds=3, quiet=quiet), prepare_model)
        ref.reference = lambda: (lambda warmup, iters: [140.0 if slow() else 100.0] * iters)
        return [round(ref.compare(nn.Linear(2, 3), threshold=None).speedup, 3) for _ in range(2)]

    assert run("qsq", 0.15) == [2.0, 2.0]  # the second probe: disturbed, timed again: quiet
    assert run("qsq", 0.0) == [2.0, 1.556]  # no slack: the disturbed reading stands
    assert run("qsss", 0.15) == [2.0, 1.556]  # disturbed through both re-timings: it stands
    assert run("sq", 0.15) == [1.556, 2.0]  # nothing quieter seen before the first probe


def test_a_budget_spent_at_a_redo_emits_the_step_it_would_have_replaced(tmp_path):
    """Fresh builds in the final check run 15% faster than the probes' (as GPU builds may): the
    check lands above the band and the loop redoes step 1; the budget runs out as the redo
    starts, so the overshot step 1, which met the target, is emitted with its own final check
    (not the unpruned model)."""
    clock = Clock(r"^final check .* redoing step 1")
    original = DenseLike().eval()
    n_params = sum(p.numel() for p in original.parameters())
    fresh = [False]

    def log(line: str) -> None:
        clock.log(line)
        fresh[0] = fresh[0] or line.startswith("final check: the emitted model")

    def prepare_fresh(module: nn.Module):
        sample = prepare(module)
        pruned = sum(p.numel() for p in module.parameters()) != n_params
        scale = 0.85 if fresh[0] and pruned else 1.0
        return lambda warmup, iters: [v * scale for v in sample(warmup, iters)]

    torch.manual_seed(0)
    cfg = OptimizeConfig(speedup=1.3, time_budget_s=60, compare=CompareRule(max_rounds=3))
    result = Optimizer(original, SHAPE, cfg, latency_us=layer_us, prepare_model=prepare_fresh,
                       out_dir=tmp_path, log=log, progress=False, clock=clock).run()
    assert any("redoing step 1" in line for line in clock.lines)
    assert [h.step for h in result.history] == [0, 1] and result.chosen_step == 1
    assert result.confirmation is not None and result.confirmation.speedup > 1.3 * 1.1
    assert result.met_target and result.status == "overshot"
    assert result.stop_reason.startswith("the time budget (--time-budget-s 60) was spent while step 1 "
                                         "was redone")
    assert "emitting step 1 as first checked" in result.stop_reason and "and was redone" not in result.stop_reason

