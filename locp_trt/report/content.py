"""The content of report.json, from a finished run: the result block (the one final figure and
its verdict), per-step history, per-layer latencies predicted and measured in place, the
staircases stairs.png draws and the envelope check that judges the same ones.

`files.write_report` writes it; `plots.write_plots` draws from it.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..latency.compare import Comparison, Verdict
from ..latency.config import LayerConfig, Precision
from ..latency.e2e import TimeShares
from ..latency.fingerprint import DeviceFingerprint
from ..method.candidates import group_latency_fn
from ..method.config import OptimizeConfig
from ..method.records import OptimizeResult
from ..prune.graph import group_floor

__all__ = ["RunFacts", "build_report", "minimal_report", "result_block", "match_nodes", "outside_layers", "per_layer",
           "group_stairs",
           "envelope_check", "deciding_steps", "runtime_status"]


@dataclass(frozen=True)
class RunFacts:
    """What a report says about a run besides the loop's result."""

    source: str  # the model argument ("example", a path) or "module" (given in Python)
    arch: str | None
    kind: str  # how the model was loaded
    input_shape: tuple[int, ...]  # one sample
    device_profile: str
    runtime_label: str | None  # None: a lookup table alone
    latency_tables: tuple[Path, ...]  # empty: measured here; two or more: one plan for every device
    fingerprint: DeviceFingerprint
    precision: Precision
    batch: int
    data: str | None
    config: OptimizeConfig


def build_report(facts: RunFacts, result: OptimizeResult, graph0, recorder,
                 measurements: Callable[[], Mapping[str, Any]], *,
                 artifacts: Mapping[str, Any], in_model: tuple[Mapping[str, Any], ...] | None,
                 loop_s: float, guard: Callable[[str, Callable[[], Any]], Any] | None = None) -> dict[str, Any]:
    """The report of one run (what report.json holds, without its schema tag).

    Args:
        facts: the run's model, device and settings.
        result: what the loop returned (its final check is the headline).
        graph0: the unpruned model's channel graph.
        recorder: the run's `LatencyRecorder` (staircase points; the chosen widths are asked too).
        measurements: the meter's counters (read after the per-layer figures were asked).
        artifacts: the files written and how.
        in_model: per-layer in-model times (before, after) where the runtime profiles nodes,
            and (third) `outside_layers` of the unpruned model's profile.
        loop_s: wall seconds of the loop.
        guard: runs each detail section (per-layer figures, envelope check, staircases) as
            `guard(what, section)`, returning None where it fails (the run's `_AfterWrite`
            records why); None: a failing section raises.
    """
    method = facts.config
    guard = guard or (lambda _what, section: section())
    history = [{**asdict(h), "kind": h.kind, "speedup": h.speedup_over(result.baseline),
                "emitted": h.step == result.chosen_step} for h in result.history]
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "",
        "model": {"source": facts.source, "arch": facts.arch, "kind": facts.kind,
                  "input_shape": list(facts.input_shape)},
        "device_profile": facts.device_profile,
        "runtime": facts.runtime_label,
        "latency_source": _latency_source(facts.latency_tables),
        "fingerprint": facts.fingerprint.describe(),
        "fingerprint_detail": facts.fingerprint.to_dict(),
        "precision": facts.precision.value,
        "batch": facts.batch,
        "config": method.to_json(),
        "target": (f"{method.speedup}x speedup" if method.speedup is not None
                   else f"{method.target_latency_ms} ms"),
        "data": facts.data,
        "history": history,
        "result": result_block(method, result, result.confirmation),
        "per_layer": guard("the per-layer figures",
                           lambda: per_layer(graph0, result.final.widths, recorder, in_model)),
        # the unpruned model's profiled nodes outside its layers, by op (where the runtime profiles)
        "time_outside_layers": in_model[2] if in_model is not None and len(in_model) > 2 else None,
        "envelope_check": guard("the envelope check",
                                lambda: envelope_check(result.history, result.chosen_step)),
        "measurements": dict(measurements()),
        "timings": {"loop_s": round(loop_s, 2),
                    "note": "loop_s: the baseline, every layer measurement, probe, fine-tune "
                            "and the final check; measurements.measure_s: layer configs alone"},
        "stairs": guard("the staircases", lambda: group_stairs(
            graph0, result.history, result.chosen_step, recorder, min_width_ratio=method.min_width_ratio)),
        "artifacts": dict(artifacts),
        "runtimes_exercised": runtime_status(facts.runtime_label),
    }


def _latency_source(tables: tuple[Path, ...]) -> str:
    if not tables:
        return "measured here"
    if len(tables) == 1:
        return f"lookup table {tables[0]}"
    return (f"lookup tables {', '.join(str(t) for t in tables)}: one plan for every device, each decision "
            "judged by the worst device (its layer sum as a share of its unpruned model's)")


def minimal_report(method: OptimizeConfig, result: OptimizeResult, artifacts: Mapping[str, Any]) -> dict[str, Any]:
    """The report of a run whose full report could not be built (the failure is in its
    "warnings"): the result block, the steps, and the files written."""
    try:
        block = result_block(method, result, result.confirmation)
    except Exception:  # noqa: BLE001 - the bare facts, from the loop's own result
        block = {"speedup": result.speedup, "speedup_kind": "the loop's own figure",
                 "status": result.status, "met_target": result.met_target,
                 "target_speedup": result.target_speedup, "why_missed": "", "stop_reason": result.stop_reason}
    return {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "",
            "result": block, "history": [], "artifacts": dict(artifacts)}


def result_block(method: OptimizeConfig, result: OptimizeResult, cmp: Comparison | None) -> dict[str, Any]:
    """The report's one source of truth for the final latency and speedup."""
    target = result.target_speedup
    if cmp is not None:
        speedup, base_us, final_us = cmp.speedup, cmp.a_us, cmp.b_us
        kind = "measured, interleaved"
        extra = {"speedup_low": cmp.low, "speedup_high": cmp.high, "rounds": cmp.rounds,
                 "confidence": cmp.confidence, "verdict": cmp.verdict.value,
                 "comparison": cmp.summary()}
    elif result.final.kind == "measured":  # a measured run that emitted the unpruned model
        speedup, base_us, final_us = result.speedup, result.baseline.latency_us, result.final.latency_us
        kind = "measured (the unpruned model: no step was kept)"
        extra = {"verdict": "meets" if speedup >= target else "misses"}
    else:
        speedup, base_us, final_us = result.speedup, result.baseline.predicted_us, result.final.predicted_us
        kind = "predicted from the lookup table"
        extra = {"verdict": "meets" if speedup >= target else "misses"}
    met = result.met_target
    high = target * (1 + method.tolerance)
    why = ""
    if result.status == "overshot":
        why = (f"{speedup:.3f}x ({kind}) is above the band [{target:.3g}x, {high:.3g}x]: no plan "
               f"the loop measured landed inside it; the loop stopped because {result.stop_reason}")
    elif not met and cmp is not None and cmp.verdict is Verdict.UNCLEAR:
        why = (f"the final check cannot tell {speedup:.3f}x (90% CI {cmp.low:.3f}-{cmp.high:.3f}) from the "
               f"{target:.3g}x target; the loop stopped because {result.stop_reason}")
    elif not met:
        why = (f"{speedup:.3f}x {kind} is below the {target:.3g}x target; the loop stopped because "
               f"{result.stop_reason}")
    shares = (result.latency_model or {}).get("time_shares")
    if why and not met and shares:  # what pruning could have saved at most
        why += f"; {TimeShares.from_json(shares).sentence()}"
    return {
        "baseline_us": base_us, "final_us": final_us, "target_us": base_us / target,
        "target_speedup": target, "tolerance": method.tolerance, "speedup": speedup,
        "speedup_kind": kind, **extra, "status": result.status, "met_target": met,
        "within_tolerance": result.status == "landed", "band": [target, high],
        "why_missed": why, "baseline_source": "measured in this run" if cmp is not None else kind,
        "chosen_step": result.chosen_step, "loop_speedup": result.speedup,
        "stop_reason": result.stop_reason,
        "accuracy_before": result.baseline.accuracy, "accuracy_after": result.final.accuracy,
        "val_accuracy_before": result.baseline.val_accuracy,
        "val_accuracy_after": result.final.val_accuracy, "guard": result.guard,
        "flops_before": result.baseline.flops, "flops_after": result.final.flops,
        "params_before": result.baseline.params, "params_after": result.final.params,
        "latency_model": result.latency_model,
    }


def deciding_steps(history, chosen_step: int) -> dict[str, int]:
    """Group id -> the step whose staircase gave it its emitted width: the last step, up to the
    emitted one, that changed it (groups never changed are left out). Steps after the emitted one
    changed nothing that was emitted. `envelope_check` and stairs.png both take their step from
    here, so they judge and draw the same staircase."""
    upto = [h for h in history if h.step <= chosen_step]
    steps: dict[str, int] = {}
    for prev, rec in zip(upto, upto[1:]):
        for gid, w in rec.widths.items():
            if w != prev.widths.get(gid):
                steps[gid] = rec.step
    return steps


def _touched_configs(graph0, gid: str, context: Mapping[str, int], width: int) -> list[LayerConfig]:
    """Configs of the layers `gid` touches at `width`, the other groups at `context`."""
    at = graph0.layer_configs({**context, gid: width})
    return [at[n] for n in graph0.touched_layers(gid)]


def group_stairs(graph0, history, chosen_step: int, recorder, top: int = 4, *,
                 min_width_ratio: float | None = None) -> dict[str, Any]:
    """Staircases of the `top` groups with the most latency at the start, each as the step that
    set its emitted width saw it (`_deciding_steps`; step 1 for groups kept at full width): the
    points that step's discovery measured, with the other groups at the widths the step started
    from, and the envelope it offered. A staircase moves with its neighbours' widths (a group's
    layers take the next group's width as their other dimension), so step 1's points and
    envelope say nothing about a width chosen later. The chosen width's point is measured too
    (shared: usually already known), so every panel shows it. Points start at the search's
    floor (`group_floor` at `min_width_ratio`; None: the narrowest width that keeps every concat
    part), as no width below it was ever a candidate."""
    by_step = {h.step: h for h in history}
    final = by_step[chosen_step].widths
    deciding = deciding_steps(history, chosen_step)
    seen = recorder.seen
    shares = []
    for gid, g in graph0.groups.items():
        if not g.prunable:
            continue
        base = group_latency_fn(graph0, gid, {}, lambda c: seen.get(c, 0.0))(g.width)
        shares.append((base, gid))
    out: dict[str, Any] = {}
    for _, gid in sorted(shares, reverse=True)[:top]:
        g = graph0.groups[gid]
        step = deciding.get(gid, 1 if 1 in by_step else None)
        context = dict(by_step[step - 1].widths) if step else {}
        if final.get(gid) is not None:
            for c in _touched_configs(graph0, gid, context, final[gid]):
                recorder(c)
        points = {}
        floor = group_floor(g, min_width_ratio) if min_width_ratio is not None else g.min_width()
        for w in range(floor, g.width + 1, g.blocks):  # a grouped conv's group: whole steps
            here = _touched_configs(graph0, gid, context, w)
            if all(c in seen for c in here):
                points[w] = sum(seen[c] for c in here)
        out[gid] = {"step": step, "points": points,
                    "envelope": by_step[step].candidates.get(gid, []) if step else [],
                    "chosen": final.get(gid)}
    return out


def envelope_check(history, chosen_step: int) -> dict[str, Any]:
    """For every group the emitted model changed: was its width one of the envelope widths
    offered at the step that set it (`_deciding_steps`, the step stairs.png draws)?"""
    by_step = {h.step: h for h in history}
    final = by_step[chosen_step].widths
    return {gid: {"width": final[gid], "step": step,
                  "on_envelope": final[gid] in by_step[step].candidates.get(gid, [])}
            for gid, step in deciding_steps(history, chosen_step).items()}


def match_nodes(configs: Mapping[str, LayerConfig], nodes) -> dict[str, float]:
    """Layer name -> in-model kernel time (µs), matching profiled nodes to layers in execution
    order by weight shape and input size. Unmatched layers are left out, never guessed."""
    return {name: node.median_us for name, node in _matched_nodes(configs, nodes).items()}


def outside_layers(configs: Mapping[str, LayerConfig], nodes, top: int = 6) -> dict[str, Any]:
    """Where a profiled model's time outside its conv/linear layers goes: the nodes no layer
    matched (`match_nodes`), summed per op (µs), the costliest `top` (an SE block's Mul and
    Sigmoid, pooling, activations the runtime did not fuse, the head's reshapes)."""
    matched = {id(n) for n in _matched_nodes(configs, nodes).values()}
    by_op: dict[str, float] = {}
    for node in nodes:
        if id(node) not in matched:
            by_op[node.op] = by_op.get(node.op, 0.0) + float(node.median_us)
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1])
    return {"profiled_us": round(sum(float(n.median_us) for n in nodes), 3),
            "layers_us": round(sum(float(n.median_us) for n in nodes if id(n) in matched), 3),
            "outside_us": round(sum(by_op.values()), 3),
            "by_op_us": {op: round(us, 3) for op, us in ranked[:top]}}


def _matched_nodes(configs: Mapping[str, LayerConfig], nodes) -> dict[str, Any]:
    free = [n for n in nodes if len(n.input_shapes) >= 2]
    out: dict[str, Any] = {}

    def fits(node_w: tuple[int, ...], w: tuple[int, ...]) -> bool:
        # Runtimes pad channel dimensions to their block size (ONNX Runtime's NCHWc pads conv
        # weights to 8 or 16 channels), so a padded dimension still matches; kernels must agree.
        return len(node_w) == len(w) and all(
            a == b if i >= 2 else b <= a < b + 16 for i, (a, b) in enumerate(zip(node_w, w)))

    for name, cfg in configs.items():
        w = tuple(cfg.weight_shape)
        for i, node in enumerate(free):
            x, weight = node.input_shapes[0], tuple(node.input_shapes[1])
            if not (fits(weight, w) or fits(weight, w[::-1])) or (
                    len(x) == 4 and tuple(x[2:]) != tuple(cfg.input_hw)):
                continue
            out[name] = node
            del free[i]
            break
    return out


def per_layer(graph0, widths: Mapping[str, int], latency_us: Callable[[LayerConfig], float],
               in_model: tuple[Mapping[str, float], Mapping[str, float]] | None) -> list[dict]:
    """Every conv/linear layer before and after: predicted (its one-layer graph, measured alone)
    and, where the runtime can profile inside the model, measured in place (fused kernels)."""
    before = graph0.layer_configs({})
    after = graph0.layer_configs(dict(widths))
    rows = []
    for n in before:
        row = {"layer": n, "before": str(before[n]), "after": str(after[n]),
               "predicted_before_us": latency_us(before[n]), "predicted_after_us": latency_us(after[n])}
        if in_model is not None:
            row["measured_before_us"] = in_model[0].get(n)
            row["measured_after_us"] = in_model[1].get(n)
        rows.append(row)
    return rows


def runtime_status(label: str | None) -> str:
    """Plain words on which runtime (by its label) produced the measured figures."""
    if label is None:
        return "no runtime ran here: layer latencies came from the lookup table"
    return (f"{label} measured every figure in this report on this machine; TensorRT "
            "figures appear only when the runtime is 'tensorrt'")

