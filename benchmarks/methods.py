"""The pruning methods compared, each producing a `Variant` (pruned model + what deciding cost).

* `run_locp`: this tool, `locp_trt.optimize` (three-point envelope candidates, latency sharing through the
  meter, greedy two-stage benefit, end-to-end calibration) to a measured speedup.
* `run_tp`: Torch-Pruning's `MagnitudePruner` (L1 magnitude) with `round_to` 1 or 8, its pruning
  ratio bisected until the FLOPs match a target ratio (LOCP's).
* `run_uniform`: the same keep-ratio for every prunable group, L1 channels (`apply_plan`), the
  ratio bisected to the same FLOPs.
* `run_halp`: a HALP-style multiple-choice knapsack (`knapsack_search`) over an exhaustive
  lookup table (`discover_candidates(method=SWEEP)`: every width of every group measured), one
  shot from the original widths to LOCP's final predicted layer-sum latency.

FLOPs, params and widths of every variant are counted the same way, on the unpruned model's
channel graph (`ModelGraph.flops(widths)`), so "same FLOPs" means the same thing for all.
"""

from __future__ import annotations

import copy
import enum
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from benchmarks.measure import BudgetExceeded
from locp_trt.latency.config import LayerConfig, Precision
from locp_trt.latency.meter import LatencyMeter
from locp_trt.method.benefit import knapsack_search, predicted_latency_us
from locp_trt.method.candidates import DiscoveryMethod, discover_candidates
from locp_trt.prune.graph import ModelGraph, build_graph, group_floor
from locp_trt.prune.importance import Importance, group_importance, importance_lost
from locp_trt.prune.plan import PruningPlan, apply_plan

__all__ = [
    "Method",
    "METHOD_LABELS",
    "Subject",
    "Variant",
    "FlopsMatch",
    "make_subject",
    "unpruned_variant",
    "widths_of",
    "run_locp",
    "tp_prune",
    "run_tp",
    "uniform_widths",
    "run_uniform",
    "exhaustive_table",
    "run_halp",
    "knob_model",
    "knob_guess",
    "uniform_knob_for_flops",
    "variant_of",
    "prunable_share",
]


class Method(str, enum.Enum):
    """The variants of one comparison, in table order."""

    UNPRUNED = "unpruned"
    LOCP = "locp"
    TP_ROUND1 = "tp_round1"
    TP_ROUND8 = "tp_round8"
    UNIFORM_L1 = "uniform_l1"
    HALP = "halp_exhaustive"


METHOD_LABELS = {
    Method.UNPRUNED: "unpruned",
    Method.LOCP: "LOCP (three-point + sharing)",
    Method.TP_ROUND1: "Torch-Pruning L1, round_to=1",
    Method.TP_ROUND8: "Torch-Pruning L1, round_to=8",
    Method.UNIFORM_L1: "uniform L1",
    Method.HALP: "HALP-style knapsack, exhaustive table",
}


@dataclass
class Subject:
    """The unpruned model of a comparison and what every method needs about it."""

    name: str  # zoo name
    model: nn.Module  # eval mode, CPU, never modified
    input_shape: tuple[int, ...]  # one sample (C, H, W)
    graph: ModelGraph  # batch 1, fp32: FLOPs and params per sample
    scores: dict[str, np.ndarray]  # L1 importance of every prunable group (normalised per group)
    accuracy: float | None = None  # top-1 % of the unpruned model, when trained here

    @property
    def flops(self) -> int:
        """Conv/linear FLOPs of one sample, unpruned."""
        return self.graph.flops()

    def prunable(self) -> list[str]:
        return [g.id for g in self.graph.prunable()]


@dataclass(frozen=True)
class Variant:
    """One pruned (or the unpruned) model and the cost of deciding it.

    Attributes:
        method: which method produced it.
        widths: width of every prunable group (relative to the unpruned model).
        flops: conv/linear FLOPs of one sample.
        params: conv/linear weights and biases.
        importance_lost: mean over prunable groups of the normalised L1 importance removed
            (0: nothing removed, 1: everything): a plan-quality figure where nothing is trained.
        decision_s: wall time of the pruning decision, in s (for LOCP and HALP including every
            latency measurement it made).
        layer_configs: distinct layer configs whose latency the decision needed (the size of the
            lookup table it used); 0 for methods that measure nothing.
        layer_requests: latency look-ups made (before sharing).
        layer_measured: of `layer_configs`, those timed in this run (the rest came from the store).
        end_to_end: whole-model measurements the decision made (LOCP's calibration).
        detail: method-specific figures (ratios found, FLOPs-matching error, loop summary...).
        model: the pruned module (not serialised).
    """

    method: Method
    widths: dict[str, int]
    flops: int
    params: int
    importance_lost: float
    decision_s: float = 0.0
    layer_configs: int = 0
    layer_requests: int = 0
    layer_measured: int = 0
    end_to_end: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict without the module."""
        return {"method": self.method.value, "label": METHOD_LABELS[self.method],
                "flops": self.flops, "params": self.params,
                "importance_lost": round(self.importance_lost, 5),
                "decision_s": round(self.decision_s, 3), "layer_configs": self.layer_configs,
                "layer_requests": self.layer_requests, "layer_measured": self.layer_measured,
                "end_to_end": self.end_to_end, "detail": self.detail, "widths": self.widths}


@dataclass(frozen=True)
class FlopsMatch:
    """How closely a baseline's FLOPs match the target.

    Attributes:
        target_ratio: wanted FLOPs / unpruned FLOPs.
        ratio: reached FLOPs / unpruned FLOPs.
        knob: the pruning ratio (TP) or removed fraction (uniform) that reached it.
        tries: evaluations made by the bisection.
        within_tol: |ratio - target| <= tol * target.
    """

    target_ratio: float
    ratio: float
    knob: float
    tries: int
    within_tol: bool

    @property
    def rel_error(self) -> float:
        return (self.ratio - self.target_ratio) / self.target_ratio

    def to_json(self) -> dict[str, Any]:
        return {"target_ratio": round(self.target_ratio, 5), "ratio": round(self.ratio, 5),
                "rel_error": round(self.rel_error, 5), "knob": round(self.knob, 5),
                "tries": self.tries, "within_tol": self.within_tol}


# ---- shared helpers -----------------------------------------------------------------------------
def make_subject(name: str, model: nn.Module, input_shape: tuple[int, ...]) -> Subject:
    """Trace `model` once (batch 1, fp32) and score every prunable group with L1."""
    model = model.cpu().eval()
    graph = build_graph(model, input_shape)
    scores = {g.id: group_importance(model, graph, g.id, Importance.L1) for g in graph.prunable()}
    return Subject(name, model, tuple(int(v) for v in input_shape), graph, scores)


def _prunable_widths(subject: Subject, widths: Mapping[str, int]) -> dict[str, int]:
    return {g: int(widths.get(g, subject.graph.groups[g].width)) for g in subject.prunable()}


def _variant(subject: Subject, method: Method, widths: Mapping[str, int], model: nn.Module | None,
             **kw: Any) -> Variant:
    w = _prunable_widths(subject, widths)
    lost = [importance_lost(subject.scores[g], w[g]) for g in w]
    return Variant(method=method, widths=w, flops=subject.graph.flops(w),
                   params=subject.graph.params(w),
                   importance_lost=float(np.mean(lost)) if lost else 0.0, model=model, **kw)


def unpruned_variant(subject: Subject) -> Variant:
    """The reference: the unpruned model."""
    return _variant(subject, Method.UNPRUNED, {}, subject.model)


def widths_of(subject: Subject, pruned: nn.Module) -> dict[str, int]:
    """Width of every prunable group of `subject` in a pruned copy of its model.

    Group ids are the names of the conv/linear modules rooting the groups, so the pruned copy's
    module of that name has the group's current width as its output size.
    """
    out = {}
    for gid in subject.prunable():
        m = pruned.get_submodule(gid)
        out[gid] = int(m.out_features if isinstance(m, nn.Linear) else m.out_channels)
    return out


def _bisect(flops_ratio: Callable[[float], float], target: float, hi: float, tol: float,
            grid: float = 0.05, max_refine: int = 12) -> tuple[float, float, int]:
    """The knob in [0, hi] whose FLOPs ratio comes closest to `target`.

    A grid scan first (Torch-Pruning with round_to is not monotone in its ratio: a group whose
    rounded width would fall under the floor is left whole, so FLOPs can rise again at high
    ratios), then bisection inside every grid interval that brackets the target, stopping once
    within `tol`. Returns (knob, reached ratio, evaluations); ties go to the smaller knob.
    """
    seen: dict[float, float] = {0.0: 1.0}

    def f(k: float) -> float:
        k = round(min(max(k, 0.0), hi), 6)
        if k not in seen:
            seen[k] = flops_ratio(k)
        return seen[k]

    def close(k: float) -> bool:
        return abs(f(k) - target) <= tol * target

    knobs = [round(i * grid, 6) for i in range(1, int(hi / grid) + 1)] + [hi]
    for k in knobs:
        f(k)
    pts = sorted(seen.items())
    if not any(close(k) for k, _ in pts):
        for (k0, r0), (k1, r1) in zip(pts, pts[1:]):
            if (r0 - target) * (r1 - target) > 0:
                continue
            lo, up = (k0, k1) if r0 >= r1 else (k1, k0)  # f(lo) >= target >= f(up)
            for _ in range(max_refine):
                mid = 0.5 * (lo + up)
                if close(mid):
                    break
                if f(mid) > target:
                    lo = mid
                else:
                    up = mid
            if any(close(k) for k in seen):
                break
    best = min(seen.items(), key=lambda kr: (abs(kr[1] - target), kr[0]))
    return best[0], best[1], len(seen) - 1


# ---- LOCP ---------------------------------------------------------------------------------------
def run_locp(subject: Subject, speedup: float, batch: int, precision: Precision, meter: LatencyMeter, *,
             min_width_ratio: float = 0.1, log: Callable[[str], None] = print,
             progress: bool = False) -> Variant:
    """Run this tool (`locp_trt.optimize`, no fine-tuning, no files but its report) to `speedup`.

    When a layer measurement raises `BudgetExceeded` (a `measure.MeteredRuntime` behind the
    meter), the last step the loop completed is kept (marked `stopped_by_budget`); with no
    completed step the exception propagates.

    Args:
        subject: the unpruned model.
        speedup: measured end-to-end speedup the loop aims for.
        batch: batch size the latencies are for.
        precision: precision the latencies are for.
        meter: the layer latencies (a fresh `LatencyMeter` over the shared store, so its stats
            are this decision's alone); its runtime also times the whole models, interleaved.
        min_width_ratio: no group below this fraction of its width.
        log: receives the loop's progress lines.
        progress: tqdm bars.
    """
    import locp_trt
    from locp_trt.method.checkpoints import last_checkpoint

    lines: list[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        log(f"  locp: {line}")

    t0 = time.perf_counter()
    stopped = False
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="locp_bench_") as tmp:
        out = Path(tmp) / "run"
        try:
            optimized = locp_trt.optimize(subject.model, subject.input_shape, meter=meter,
                                          speedup=speedup, out=out, precision=precision, batch=batch,
                                          arch=subject.name, min_width_ratio=min_width_ratio,
                                          export=False, engine=False, log=keep, progress=progress)
            result, report = optimized.result, optimized.report.get("result", {})
            model, history = result.model, list(result.history)
            target, met = result.target_speedup, result.met_target
        except BudgetExceeded:
            # Keep the last step the loop completed (it checkpoints after every step).
            loaded = last_checkpoint(out, subject.model)
            if loaded is None or loaded.history[-1].step < 1:
                raise
            model, history, target = loaded.model, loaded.history, loaded.target_speedup
            met, stopped = history[-1].speedup_over(history[0]) >= target, True
            keep(f"stopped by the time budget; keeping step {history[-1].step}")
    wall = time.perf_counter() - t0
    final = history[-1]
    detail = {"loop_steps": final.step, "loop_met_target": met, "stopped_by_budget": stopped,
              "loop_target_us": round(history[0].latency_us / target, 3),
              "loop_target_speedup": round(target, 4),
              "loop_baseline_us": round(history[0].latency_us, 3),
              "loop_final_us": round(final.latency_us, 3),
              "predicted_us": round(final.predicted_us, 3),
              "history": [{"step": h.step, "latency_us": round(h.latency_us, 3),
                           "predicted_us": round(h.predicted_us, 3), "flops": h.flops,
                           "search": h.search} for h in history],
              "log": lines[-3:]}
    if report:  # the run's own verdict: status, final check (interval) and the layer sum's share
        lm = report.get("latency_model") or {}
        detail["report"] = {"status": report.get("status"), "speedup": report.get("speedup"),
                            "speedup_low": report.get("speedup_low"),
                            "speedup_high": report.get("speedup_high"),
                            "stop_reason": report.get("stop_reason"),
                            "why_missed": report.get("why_missed"),
                            "layer_sum_share": lm.get("layer_sum_share")}
    return _variant(subject, Method.LOCP, final.widths, model.eval(), decision_s=wall, detail=detail)


# ---- Torch-Pruning ------------------------------------------------------------------------------
def _classifier(model: nn.Module) -> nn.Module:
    """The last nn.Linear (the classifier), else the last conv: never pruned by the baselines."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                last = m
    if last is None:
        raise ValueError("the model has no nn.Linear or nn.Conv2d layer")
    return last


def tp_prune(model: nn.Module, input_shape: tuple[int, ...], ratio: float, round_to: int, *,
             global_pruning: bool = True, max_ratio: float = 0.9) -> nn.Module:
    """A copy of `model` pruned by Torch-Pruning's MagnitudePruner (L1, p=1) at `ratio`.

    Args:
        model: not modified.
        input_shape: one sample (C, H, W).
        ratio: Torch-Pruning's `pruning_ratio` (fraction of channels removed).
        round_to: keep channel counts at multiples of this (1: no rounding).
        global_pruning: rank channels across groups (True) or prune every group by `ratio`.
        max_ratio: no layer loses more than this fraction (as LOCP's `min_width_ratio` 0.1).
    """
    import torch_pruning as tp

    work = copy.deepcopy(model).cpu().eval()
    if ratio <= 0:
        return work
    example = torch.zeros((1, *input_shape))
    pruner = tp.pruner.MagnitudePruner(
        work, example, importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=float(ratio), global_pruning=global_pruning, round_to=int(round_to),
        max_pruning_ratio=max_ratio, ignored_layers=[_classifier(work)])
    pruner.step()
    return work.eval()


def run_tp(subject: Subject, target_ratio: float, round_to: int, *, tol: float = 0.02,
           global_pruning: bool = True, max_ratio: float = 0.9,
           cache: dict | None = None) -> Variant:
    """Torch-Pruning at the pruning ratio whose FLOPs come closest to `target_ratio`.

    Args:
        subject: the unpruned model.
        target_ratio: wanted FLOPs / unpruned FLOPs (LOCP's).
        round_to: 1 or 8.
        tol: stop bisecting once within this relative FLOPs error.
        global_pruning: Torch-Pruning's global ranking (else every group by the same ratio).
        max_ratio: Torch-Pruning's `max_pruning_ratio`.
        cache: (model, round_to, mode, ratio) -> FLOPs ratio, shared across calls to avoid
            re-pruning at ratios already tried.
    """
    cache = {} if cache is None else cache
    base = subject.flops

    def flops_ratio(r: float) -> float:
        key = (subject.name, subject.input_shape, round_to, global_pruning, max_ratio, round(r, 6))
        if key not in cache:
            pruned = tp_prune(subject.model, subject.input_shape, r, round_to,
                              global_pruning=global_pruning, max_ratio=max_ratio)
            cache[key] = subject.graph.flops(widths_of(subject, pruned)) / base
        return cache[key]

    t0 = time.perf_counter()
    knob, ratio, tries = _bisect(flops_ratio, target_ratio, max_ratio, tol)
    matching_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = tp_prune(subject.model, subject.input_shape, knob, round_to,
                     global_pruning=global_pruning, max_ratio=max_ratio)
    decision_s = time.perf_counter() - t1
    match = FlopsMatch(target_ratio, ratio, knob, tries, abs(ratio - target_ratio) <= tol * target_ratio)
    method = Method.TP_ROUND8 if round_to == 8 else Method.TP_ROUND1
    detail = {"flops_match": match.to_json(), "matching_s": round(matching_s, 3),
              "round_to": round_to, "global_pruning": global_pruning, "max_pruning_ratio": max_ratio}
    return _variant(subject, method, widths_of(subject, model), model, decision_s=decision_s,
                    detail=detail)


# ---- uniform ------------------------------------------------------------------------------------
def uniform_widths(subject: Subject, removed: float) -> dict[str, int]:
    """Every prunable group keeps round(width * (1 - removed)) channels (at least 1); a group a
    grouped conv splits into `blocks` conv groups keeps the nearest multiple of `blocks` (at
    least one channel per conv group), the widths it can take."""
    out = {}
    for g in subject.prunable():
        group = subject.graph.groups[g]
        keep = group.width * (1.0 - removed) / group.blocks
        out[g] = max(1, int(round(keep))) * group.blocks
    return out


def run_uniform(subject: Subject, target_ratio: float, *, tol: float = 0.02,
                max_removed: float = 0.9) -> Variant:
    """The same removed fraction for every prunable group, L1 channels, at the target FLOPs."""
    base = subject.flops
    t0 = time.perf_counter()
    knob, ratio, tries = _bisect(lambda r: subject.graph.flops(uniform_widths(subject, r)) / base,
                                 target_ratio, max_removed, tol)
    widths = uniform_widths(subject, knob)
    plan = PruningPlan(subject.name, subject.input_shape, widths)
    model, _ = apply_plan(subject.model, plan, subject.input_shape, importance=Importance.L1)
    wall = time.perf_counter() - t0
    match = FlopsMatch(target_ratio, ratio, knob, tries, abs(ratio - target_ratio) <= tol * target_ratio)
    return _variant(subject, Method.UNIFORM_L1, widths, model.eval(), decision_s=wall,
                    detail={"flops_match": match.to_json()})


# ---- HALP-style knapsack over an exhaustive table -----------------------------------------------
def exhaustive_table(subject: Subject, batch: int, precision: Precision,
                     min_width_ratio: float = 0.1) -> tuple[set[LayerConfig], int]:
    """The lookup table an exhaustive sweep of every group (floor..width) needs.

    Computed without measuring anything. Returns the distinct layer configs (identical layers
    share an entry, as they do in our latency store) and the number of per-layer entries (a
    table kept per layer, as HALP's is: one entry per layer and width it sees).
    """
    graph = build_graph(subject.model, subject.input_shape, batch=batch, precision=precision)
    table: set[LayerConfig] = set()
    per_layer: set[tuple[str, LayerConfig]] = set()
    for g in graph.prunable():
        touched = graph.touched_layers(g.id)
        for w in range(group_floor(g, min_width_ratio), g.width + 1, g.blocks):
            cfgs = graph.layer_configs({g.id: w})
            table.update(cfgs[n] for n in touched)
            per_layer.update((n, cfgs[n]) for n in touched)
    return table, len(per_layer)


def run_halp(subject: Subject, *, target_us: float, batch: int, precision: Precision,
             latency_us: Callable[[LayerConfig], float], min_width_ratio: float = 0.1,
             progress: bool = False) -> Variant:
    """One-shot knapsack over an exhaustive sweep to the predicted layer-sum `target_us`.

    Args:
        subject: the unpruned model.
        target_us: summed layer latency to reach, in µs (LOCP's final prediction).
        batch: batch size of the latencies.
        precision: precision of the latencies.
        latency_us: layer latency in µs (a fresh meter behind it; counts come from the caller).
        min_width_ratio: no group below this fraction of its width.
        progress: tqdm bars.
    """
    t0 = time.perf_counter()
    graph = build_graph(subject.model, subject.input_shape, batch=batch, precision=precision)
    cands = discover_candidates(graph, {}, latency_us, method=DiscoveryMethod.SWEEP,
                                min_width_ratio=min_width_ratio, progress=progress)
    t_table = time.perf_counter() - t0
    result = knapsack_search(graph, {}, cands, subject.scores, latency_us, target_us)
    plan = PruningPlan(subject.name, subject.input_shape,
                       {g: w for g, w in result.widths.items() if graph.groups[g].prunable})
    model, _ = apply_plan(subject.model, plan, subject.input_shape, importance=Importance.L1)
    wall = time.perf_counter() - t0
    detail = {"target_us": round(target_us, 3), "predicted_us": round(result.predicted_us, 3),
              "met_target": result.met_target, "table_s": round(t_table, 3),
              "search": str(result),
              "predicted_check_us": round(predicted_latency_us(graph, result.widths, latency_us), 3)}
    return _variant(subject, Method.HALP, result.widths, model.eval(), decision_s=wall, detail=detail)


# ---- baselines searched to a measured speed (speed_match) ---------------------------------------
def knob_model(subject: Subject, method: Method, *, min_width_ratio: float = 0.1,
               global_pruning: bool = True) -> tuple[Callable[[float], nn.Module], float]:
    """knob -> a pruned copy of `subject.model` for a baseline, and the largest knob allowed.

    The knob is Torch-Pruning's `pruning_ratio` (TP_ROUND1, TP_ROUND8) or the fraction every
    group loses (UNIFORM_L1, L1 channels); no group goes below `min_width_ratio` of its width.
    """
    hi = 1.0 - min_width_ratio
    if method in (Method.TP_ROUND1, Method.TP_ROUND8):
        round_to = 8 if method is Method.TP_ROUND8 else 1
        return (lambda k: tp_prune(subject.model, subject.input_shape, k, round_to,
                                   global_pruning=global_pruning, max_ratio=hi)), hi
    if method is Method.UNIFORM_L1:
        def uniform(k: float) -> nn.Module:
            plan = PruningPlan(subject.name, subject.input_shape, uniform_widths(subject, k))
            return apply_plan(subject.model, plan, subject.input_shape, importance=Importance.L1)[0].eval()
        return uniform, hi
    raise ValueError(f"no knob for method {method.value!r}")


def knob_guess(speedup: float) -> float:
    """A first knob for a measured speedup: the removed fraction whose FLOPs (which fall about as
    the square of the kept fraction) would give it if latency tracked FLOPs."""
    return 1.0 - speedup ** -0.5


def uniform_knob_for_flops(subject: Subject, flops_ratio: float, *, tol: float = 0.02,
                           max_removed: float = 0.9) -> float:
    """The uniform removed fraction whose FLOPs come closest to `flops_ratio` (counted, not
    timed: a cheap first knob for a speed search that starts from another method's FLOPs)."""
    base = subject.flops
    knob, _, _ = _bisect(lambda r: subject.graph.flops(uniform_widths(subject, r)) / base,
                         flops_ratio, max_removed, tol)
    return knob


def variant_of(subject: Subject, method: Method, model: nn.Module, **kw: Any) -> Variant:
    """A `Variant` of a pruned copy of `subject.model` (widths read off its modules)."""
    return _variant(subject, method, widths_of(subject, model), model.eval(), **kw)


def prunable_share(subject: Subject, batch: int, precision: Precision,
                   latency_us: Callable[[LayerConfig], float]) -> dict[str, Any]:
    """Layer sums of the unpruned model at (batch, precision): every conv/linear layer, and the
    layers whose shape a prunable group changes (the time pruning can act on), in µs.

    Divide by a measured end-to-end latency for the share of the time that is prunable.
    """
    graph = build_graph(subject.model, subject.input_shape, batch=batch, precision=precision)
    configs = graph.layer_configs({})
    touched: set[str] = set()
    for g in graph.prunable():
        touched.update(graph.touched_layers(g.id))
    times = {n: float(latency_us(c)) for n, c in configs.items()}
    return {"layers": len(configs), "prunable_layers": len(touched & set(configs)),
            "layer_sum_us": round(sum(times.values()), 3),
            "prunable_sum_us": round(sum(t for n, t in times.items() if n in touched), 3)}
