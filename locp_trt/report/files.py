"""report.json of an optimize run: writing, reading, and the summary table `python -m locp_trt report` prints.

Every figure in a report is a measurement or a prediction made in the run that wrote it; the
report says which (`"measured"` blocks hold Timing summaries, `"predicted_us"` the layer-sum model).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import LocpError
from ..latency.e2e import TimeShares

__all__ = ["REPORT_SCHEMA", "write_report", "load_report", "summary_table", "status_words"]

REPORT_SCHEMA = "locp_trt.report/2"


def write_report(out_dir: Path, report: Mapping[str, Any]) -> Path:
    """Write `report.json` (with the schema tag) into `out_dir`; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    path.write_text(json.dumps({"schema": REPORT_SCHEMA, **report}, indent=1, default=_json_default))
    return path


def _json_default(o: Any) -> Any:
    if hasattr(o, "value"):
        return o.value
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def load_report(path: Path) -> dict[str, Any]:
    """Read a report.json (or the report.json inside a run directory)."""
    path = Path(path)
    if not path.exists():
        raise LocpError(f"{path} does not exist; pass the --out directory of an optimize run")
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise LocpError(f"no report at {path}; pass the --out directory of an optimize run")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LocpError(f"{path} is not a readable report ({e})") from None
    if data.get("schema") != REPORT_SCHEMA:
        raise LocpError(f"{path} has schema {data.get('schema')!r}, expected {REPORT_SCHEMA!r}")
    return data


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def status_words(result: Mapping[str, Any]) -> str:
    """'met the target' / 'OVERSHOT the band of the target' / 'MISSED the target' for the result
    block (older reports without a status read from met_target); a miss whose final check was
    unclear ("could not confirm") may read at or above the target, its interval reaching below."""
    status = result.get("status") or ("landed" if result.get("met_target") else "missed")
    if status == "missed" and result.get("verdict") == "unclear":
        # e.g. 2.003x whose 90% interval reaches below 2x: not shown to reach it
        return "MISSED: could not confirm the target"
    return {"landed": "met the target", "overshot": "OVERSHOT the band of the target"}.get(
        status, "MISSED the target")


def summary_table(report: Mapping[str, Any]) -> str:
    """A plain-text table: one row per step (* marks the emitted one), then the headline (the
    final interleaved comparison: the report's one source of truth), before -> after, counts."""
    r = report["result"]
    rows = [f"{'step':>5} {'speedup':>8} {'kind':>9} {'latency µs':>11} {'layer sum':>10} {'goal':>6} "
            f"{'val %':>6} {'test %':>6} {'MFLOPs':>8} {'params':>9}"]
    for h in report["history"]:
        measured = h.get("measured") or {}
        lat = measured.get("median_us", h["predicted_us"])
        mark = "*" if h.get("emitted") else ("x" if h.get("guard_rejected") else " ")
        goal = "-" if h.get("goal_speedup") is None else f"{h['goal_speedup']:.2f}x"  # step 0 has none
        rows.append(f"{mark}{h['step']:>4} {_fmt(h.get('speedup'), '7.3f'):>7}x "
                    f"{h.get('kind', 'measured' if measured else 'predicted'):>9} {lat:>11.1f} "
                    f"{h['predicted_us']:>10.1f} {goal:>6} "
                    f"{_fmt(h.get('val_accuracy'), '6.2f'):>6} {_fmt(h.get('accuracy'), '6.2f'):>6} "
                    f"{h['flops'] / 1e6:>8.2f} {h['params']:>9}")
    rows.append("(* emitted step; x refused by the accuracy guard; per-step figures are the loop's own "
                "comparisons, the headline below is the final one; layer sum: the step's layers timed "
                "alone, the uncalibrated prediction)")
    rows.append("")
    ci = (f" (90% CI {r['speedup_low']:.3f}-{r['speedup_high']:.3f}, {r['rounds']} rounds, "
          f"{r.get('verdict', '')})" if r.get("speedup_low") is not None else "")
    rows.append(f"speedup {r['speedup']:.3f}x{ci}, {r['speedup_kind']}; {status_words(r)} "
                f"{r.get('target_speedup', 0):.3g}x (tolerance +{r.get('tolerance', 0):.0%}); "
                f"emitted step {r.get('chosen_step')}; {r.get('stop_reason', '')}")
    line = (f"before -> after (the final check's medians; step 0's row is the unpruned model timed "
            f"alone at the start): {r['baseline_us']:.1f} -> {r['final_us']:.1f} µs")
    if r.get("accuracy_before") is not None:
        line += f", test accuracy {r['accuracy_before']:.2f}% -> {r['accuracy_after']:.2f}%"
    if r.get("val_accuracy_before") is not None:
        line += f" (validation {r['val_accuracy_before']:.2f}% -> {r['val_accuracy_after']:.2f}%)"
    line += f", {r['flops_before'] / 1e6:.2f} -> {r['flops_after'] / 1e6:.2f} MFLOPs on {report['fingerprint']}"
    rows.append(line)
    for d in report.get("devices") or []:
        measured = d.get("measured")
        rows.append(f"device {d['device']}: {d['predicted_speedup']:.3f}x predicted from {d['table']}"
                    + (f", {measured['speedup']:.3f}x measured here (90% CI {measured['speedup_low']:.3f}-"
                       f"{measured['speedup_high']:.3f}, {measured.get('verdict', '')})" if measured
                       else f"; ONLY PREDICTED ({d['how'].removeprefix('predicted only: ')})"))
    jp = report.get("joint_plan") or {}
    if jp.get("aim"):
        ratios = ", ".join(f"{n} {x:.3f}" for n, x in jp["aim"]["ratios"].items() if x != 1.0)
        rows.append(f"joint plan made again ({jp['replan']} time(s)): a device measured here was short of its "
                    f"table, so its table was asked for the target times predicted/measured ({ratios})")
    if r.get("guard"):
        rows.append(f"accuracy guard (--max-acc-drop {r['guard']['max_acc_drop']}): {r['guard']['note']}")
    if r.get("why_missed"):
        rows.append(f"why: {r['why_missed']}")
    lm = r.get("latency_model") or {}
    if lm.get("predictions"):
        pairs = ", ".join(f"{name} {v['predicted_speedup']:.2f}x vs {v['measured_speedup']:.2f}x"
                          for name, v in lm["predictions"].items())
        share = lm.get("layer_sum_share")
        rows.append(f"end-to-end latency model (predicted vs measured): {pairs}"
                    + (f"; the layer sum is {share:.0%} of the unpruned model's time" if share else ""))
    if lm.get("time_shares"):
        rows.append(TimeShares.from_json(lm["time_shares"]).brief())
    outside = report.get("time_outside_layers")
    if outside and outside.get("by_op_us"):
        ops = ", ".join(f"{op} {us:.1f} µs" for op, us in outside["by_op_us"].items())
        rows.append(f"outside the conv/linear layers, profiled inside the unpruned model: "
                    f"{outside['outside_us']:.1f} of {outside['profiled_us']:.1f} µs ({ops})")
    placed = [p for p in report.get("per_layer") or [] if p.get("measured_after_us") is not None]
    if placed:
        pred = sum(p["predicted_after_us"] for p in placed)
        meas = sum(p["measured_after_us"] for p in placed)
        rows.append(f"per layer after pruning ({len(placed)} layers matched in the profiled model): "
                    f"predicted {pred:.1f} µs alone, measured {meas:.1f} µs in place")
    m = report.get("measurements", {})
    if m:
        took = f" in {m['measure_s']:.0f} s" if m.get("measure_s") else ""
        rows.append(f"layer latencies: {m.get('requested', 0)} asked, {m.get('measured', 0)} measured{took}, "
                    f"{m.get('store_hits', 0)} from the store, {m.get('memo_hits', 0)} shared in-run, "
                    f"{m.get('table_hits', 0)} from a lookup table")
    return "\n".join(rows)
