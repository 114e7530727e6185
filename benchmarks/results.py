"""The benchmark's outputs: the targets section, results.json, results.md and results.png.

A result is a plain dict (see `run.py`): run metadata plus one "cell" per (model, runtime,
precision, batch) holding every variant's figures. `targets(result)` judges the issue's targets
from the measured numbers only; `write_outputs` writes the three files atomically, so a run cut
short still leaves readable partial results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "TARGETS", "cell_key", "relative_speed", "targets", "counts_text", "markdown", "plot",
           "write_outputs"]

SCHEMA = "locp_trt.benchmarks/1"

#: The issue's targets: id -> (what is compared, threshold, runtimes it is stated for).
TARGETS: dict[str, dict[str, Any]] = {
    "locp_vs_tp_round1": {
        "want": "at equal FLOPs, LOCP's measured latency at least 25% below Torch-Pruning round_to=1",
        "max_ratio": 0.75, "other": "tp_round1", "stated_for": "gpu"},
    "locp_vs_tp_round8": {
        "want": "at equal FLOPs, LOCP's measured latency at least 10% below Torch-Pruning round_to=8",
        "max_ratio": 0.90, "other": "tp_round8", "stated_for": "gpu"},
    "speedup_2x": {
        "want": "LOCP at least 2x faster than the unpruned model (measured, interleaved)",
        "min_speedup": 2.0, "stated_for": "any"},
    "measurements_4x": {
        "want": "three-point + sharing (LOCP's distinct layer configs) at least 4x fewer "
                "measurements than the exhaustive per-layer table (every width of every group, one "
                "entry per layer, as HALP keeps it), with the same plan quality (measured latency "
                "within 5% of the HALP-style plan's, accuracy within 1 point where trained); the "
                "ratio against the exhaustive table with sharing is reported beside it",
        "min_ratio": 4.0, "latency_tol": 0.05, "accuracy_tol": 1.0, "stated_for": "any"},
}

_GPU_RUNTIMES = ("torch", "tensorrt", "onnxruntime-cuda")


def cell_key(cell: Mapping[str, Any]) -> str:
    """e.g. "resnet56 / torch fp16 / batch 32"."""
    return f"{cell['model']} / {cell['runtime']} {cell['precision']} / batch {cell['batch']}"


# ---- targets ------------------------------------------------------------------------------------
def _lat(v: Mapping[str, Any] | None) -> float | None:
    if not v or "latency" not in v:
        return None
    return float(v["latency"]["median_us"])


def _overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    la, lb = a["latency"], b["latency"]
    return la["p10_us"] <= lb["p90_us"] and lb["p10_us"] <= la["p90_us"]


def _not_counted(tid: str, cell: Mapping[str, Any]) -> str:
    """Why this cell cannot count for or against the target ("" when it counts): a GPU target
    on another runtime, or a speedup target above what the run asked LOCP for."""
    spec = TARGETS[tid]
    if spec["stated_for"] != "any" and cell["runtime"] not in _GPU_RUNTIMES:
        return "GPU target"
    asked = cell.get("speedup_target")
    if "min_speedup" in spec and asked and asked < spec["min_speedup"]:
        return f"this run asked {asked}x"
    return ""


def _check(tid: str, cell: Mapping[str, Any], status: str, figures: dict[str, Any], why: str = ""
           ) -> dict[str, Any]:
    reason = _not_counted(tid, cell)
    return {"target": tid, "cell": cell_key(cell), "applies": not reason, "not_counted": reason,
            "status": status, "figures": figures, "why": why}


def relative_speed(ratio: float) -> str:
    """LOCP's latency over another method's, in words: 0.8 -> "20.0% faster", 1.261 -> "26.1%
    slower" (never a negative "faster")."""
    if ratio <= 1.0:
        return f"{100 * (1 - ratio):.1f}% faster"
    return f"{100 * (ratio - 1):.1f}% slower"


def _vs_tp(tid: str, cell: Mapping[str, Any]) -> dict[str, Any]:
    spec = TARGETS[tid]
    v = cell.get("variants", {})
    locp, other = v.get("locp"), v.get(spec["other"])
    a, b = _lat(locp), _lat(other)
    if a is None or b is None:
        return _check(tid, cell, "not evaluated", {},
                      f"no measured latency for {'LOCP' if a is None else spec['other']}")
    ratio = a / b
    match = other["detail"].get("flops_match", {})
    figures = {"locp_us": a, "other_us": b, "ratio": round(ratio, 4), "max_ratio": spec["max_ratio"],
               "locp_flops_ratio": locp["flops_ratio"], "other_flops_ratio": other["flops_ratio"]}
    if ratio <= spec["max_ratio"]:
        return _check(tid, cell, "met", figures)
    why = (f"LOCP {a:.1f} µs vs {spec['other']} {b:.1f} µs at FLOPs ratios "
           f"{locp['flops_ratio']:.3f} / {other['flops_ratio']:.3f}: LOCP is "
           f"{relative_speed(ratio)}, the target asks {100 * (1 - spec['max_ratio']):.0f}% faster")
    if _overlap(locp, other):
        why += "; the two p10-p90 spreads overlap (the difference is within run-to-run noise)"
    if match and not match.get("within_tol", True):
        why += f"; FLOPs could not be matched within tolerance (error {100 * match['rel_error']:.1f}%)"
    return _check(tid, cell, "missed", figures, why)


def _speedup(cell: Mapping[str, Any]) -> dict[str, Any]:
    spec = TARGETS["speedup_2x"]
    locp = cell.get("variants", {}).get("locp")
    if _lat(locp) is None:
        return _check("speedup_2x", cell, "not evaluated", {}, "no measured LOCP latency")
    s, fr = float(locp["speedup"]), float(locp["flops_ratio"])
    figures = {"speedup": round(s, 4), "flops_reduction": round(1 / fr, 4) if fr > 0 else None,
               "min_speedup": spec["min_speedup"], "locp_speedup_target": cell.get("speedup_target")}
    if s >= spec["min_speedup"]:
        return _check("speedup_2x", cell, "met", figures)
    d = locp.get("detail", {})
    why = f"LOCP reached {s:.2f}x measured with {1 / fr:.2f}x fewer FLOPs"
    asked = cell.get("speedup_target")
    if asked and asked < spec["min_speedup"]:
        why += f"; this run asked LOCP for {asked}x only (--speedup)"
    elif not d.get("loop_met_target", True):
        why += "; the loop stopped short of its own target"
        if d.get("log"):
            why += f" (its last line: {d['log'][-1]})"
        if fr > 0 and 1 / fr > 1.5 * s:
            why += ("; latency fell far less than FLOPs: at this size and batch the runtime is "
                    "bound by per-layer fixed costs (launches, memory traffic), not arithmetic")
    else:
        why += "; the loop met its target on its own measurement but the interleaved re-measurement is slower"
    return _check("speedup_2x", cell, "missed", figures, why)


def _measurements(cell: Mapping[str, Any]) -> dict[str, Any]:
    spec = TARGETS["measurements_4x"]
    v = cell.get("variants", {})
    locp, halp = v.get("locp"), v.get("halp_exhaustive")
    table = cell.get("exhaustive_table_entries")
    shared = cell.get("exhaustive_table_configs")
    if locp is None or not table:
        return _check("measurements_4x", cell, "not evaluated", {}, "LOCP did not finish")
    n_locp = int(locp["layer_configs"]) or 1
    ratio = table / n_locp
    figures = {"locp_configs": locp["layer_configs"], "exhaustive_entries": table,
               "ratio": round(ratio, 3), "min_ratio": spec["min_ratio"],
               "exhaustive_configs_shared": shared,
               "ratio_vs_shared": round(shared / n_locp, 3) if shared else None}
    if _lat(halp) is None or _lat(locp) is None:
        reason = cell.get("skipped", {}).get("halp_exhaustive", "the HALP-style plan was not measured")
        return _check("measurements_4x", cell, "not evaluated", figures,
                      f"plan quality unknown: {reason} (table size counted without measuring)")
    a, b = _lat(locp), _lat(halp)
    figures.update({"locp_us": a, "halp_us": b, "latency_ratio": round(a / b, 4),
                    "locp_importance_lost": locp["importance_lost"],
                    "halp_importance_lost": halp["importance_lost"]})
    same_quality = a <= b * (1 + spec["latency_tol"])
    acc_a, acc_b = locp.get("accuracy"), halp.get("accuracy")
    if acc_a is not None and acc_b is not None:
        figures.update({"locp_accuracy": acc_a, "halp_accuracy": acc_b})
        same_quality = same_quality and acc_a >= acc_b - spec["accuracy_tol"]
    figures["same_quality"] = same_quality
    caveat = ""
    if shared and shared <= n_locp:
        caveat = (f"caveat: with the same sharing, the exhaustive table needs {shared} configs, "
                  f"no more than LOCP's {n_locp}: the saving comes from latency sharing, not from "
                  "three-point discrimination")
    if ratio >= spec["min_ratio"] and same_quality:
        return _check("measurements_4x", cell, "met", figures, caveat)
    why = []
    if ratio < spec["min_ratio"]:
        why.append(f"LOCP needed {locp['layer_configs']} distinct layer configs against "
                   f"{table} per-layer entries of the exhaustive table (ratio {ratio:.2f}; "
                   f"{shared} with sharing); LOCP's loop re-discovers candidates at every step's "
                   f"new widths ({locp.get('detail', {}).get('loop_steps', '?')} steps here)")
    if not same_quality:
        why.append(f"plan quality differs: LOCP {a:.1f} µs vs HALP-style {b:.1f} µs"
                   + (f", accuracy {acc_a:.2f}% vs {acc_b:.2f}%" if acc_a is not None and acc_b is not None else ""))
    return _check("measurements_4x", cell, "missed", figures, "; ".join(why + ([caveat] if caveat else [])))


def targets(result: Mapping[str, Any]) -> dict[str, Any]:
    """The targets section: every target judged on every finished cell, and a summary."""
    checks = []
    for cell in result.get("cells", []):
        if not cell.get("variants"):
            continue
        checks += [_vs_tp("locp_vs_tp_round1", cell), _vs_tp("locp_vs_tp_round8", cell),
                   _speedup(cell), _measurements(cell)]
    summary = {}
    for tid in TARGETS:
        rows = [c for c in checks if c["target"] == tid]
        counted = [c for c in rows if c["applies"]]
        summary[tid] = {s: sum(1 for c in counted if c["status"] == s)
                        for s in ("met", "missed", "not evaluated")}
        summary[tid]["not counted"] = len(rows) - len(counted)
    return {"criteria": {k: v["want"] + ("" if v["stated_for"] == "any" else " (stated for the GPU)")
                         for k, v in TARGETS.items()},
            "summary": summary, "checks": checks,
            "note": "'applies' is false (and 'not_counted' says why) where the issue states a target "
                    "for the GPU and the cell ran elsewhere, or the run asked LOCP for less speedup "
                    "than the target; such checks are reported for information and counted apart"}


def counts_text(t: Mapping[str, Any], tid: str) -> str:
    """'Met 1, missed 0, not evaluated 0; not counted 2 (GPU target: 1 met, 1 missed)': every
    row of the table for `tid`, the ones not counted by reason and status."""
    s = t["summary"][tid]
    text = f"Met {s['met']}, missed {s['missed']}, not evaluated {s['not evaluated']}"
    apart = [c for c in t["checks"] if c["target"] == tid and not c["applies"]]
    if apart:
        by_reason: dict[str, dict[str, int]] = {}
        for c in apart:
            why = c.get("not_counted") or "not counted"
            by_reason.setdefault(why, {}).setdefault(c["status"], 0)
            by_reason[why][c["status"]] += 1
        parts = [f"{why}: " + ", ".join(f"{n} {status}" for status, n in statuses.items())
                 for why, statuses in by_reason.items()]
        text += f"; not counted {len(apart)} ({'; '.join(parts)})"
    return text


# ---- markdown -------------------------------------------------------------------------------------
def _fmt(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _variant_row(name: str, v: Mapping[str, Any]) -> str:
    lat = v.get("latency")
    med = _fmt(lat["median_us"]) if lat else "-"
    spread = f"{lat['p10_us']:.1f}–{lat['p90_us']:.1f}" if lat else "-"
    note = []
    match = v.get("detail", {}).get("flops_match")
    if match:
        note.append(f"FLOPs match {100 * match['rel_error']:+.1f}%")
    if v.get("end_to_end"):
        note.append(f"{v['end_to_end']} end-to-end")
    measured = f"{v['layer_configs']} ({v['layer_measured']})" if v.get("layer_configs") else "0"
    return (f"| {v.get('label', name)} | {med} | {spread} | {_fmt(v.get('speedup'), '.2f')}x | "
            f"{v['flops'] / 1e6:.2f} ({v['flops_ratio']:.3f}) | {v['params']:,} | "
            f"{v['importance_lost']:.3f} | {_fmt(v.get('accuracy'), '.2f')} | {measured} | "
            f"{v['decision_s']:.1f} | {'; '.join(note)} |")


def markdown(result: Mapping[str, Any]) -> str:
    """The tables: one per cell, then the targets."""
    out = ["# LOCP against the alternatives", "",
           f"- command: `{result.get('command', '')}`",
           f"- date: {result.get('created', '')} (status: {result.get('status', '')}, "
           f"wall {result.get('wall_s', 0):.0f} s)"]
    for label, line in result.get("devices", {}).items():
        out.append(f"- device ({label}): {line}")
    out += ["", "Latency: median of interleaved round medians, p10–p90 of all samples (µs). "
            "FLOPs: conv/linear FLOPs of one sample (M), ratio to unpruned. Importance lost: mean "
            "normalised L1 importance removed per group. Layer configs: distinct layer latencies "
            "the decision needed (timed in this run). Decision: wall time of the pruning decision (s).", ""]
    for cell in result.get("cells", []):
        out.append(f"## {cell_key(cell)}")
        out.append("")
        if cell.get("device"):
            out.append(f"device: {cell['device']}; status: {cell.get('status')}")
            out.append("")
        if cell.get("variants"):
            out.append("| method | median µs | p10–p90 µs | speedup | MFLOPs (ratio) | params | "
                       "importance lost | acc % | layer configs (measured) | decision s | notes |")
            out.append("|---|---|---|---|---|---|---|---|---|---|---|")
            out += [_variant_row(k, v) for k, v in cell["variants"].items()]
        if cell.get("exhaustive_table_configs"):
            out.append("")
            out.append(f"Exhaustive table for this cell (counted without measuring): "
                       f"{cell.get('exhaustive_table_entries')} per-layer entries, "
                       f"{cell['exhaustive_table_configs']} distinct layer configs.")
        for m, reason in cell.get("skipped", {}).items():
            out.append(f"- {m} skipped: {reason}")
        for note in cell.get("notes", []):
            out.append(f"- {note}")
        out.append("")
    t = result.get("targets")
    if t:
        out += ["## Targets", ""]
        for k, want in t["criteria"].items():
            out.append(f"- **{k}**: {want}. {counts_text(t, k)}.")
        out += ["", "| target | cell | status | figures | why / caveat |", "|---|---|---|---|---|"]
        for c in t["checks"]:
            status = c["status"] + ("" if c["applies"] else
                                    f" (not counted: {c.get('not_counted') or 'GPU target'})")
            figs = ", ".join(f"{k}={v}" for k, v in c["figures"].items())
            out.append(f"| {c['target']} | {c['cell']} | {status} | {figs} | {c['why']} |")
        out.append("")
    return "\n".join(out) + "\n"


# ---- plot -----------------------------------------------------------------------------------------
def plot(result: Mapping[str, Any], path: str | Path) -> Path | None:
    """Median latency per method (p10–p90 error bars), one panel per cell; None if nothing measured."""
    cells = [c for c in result.get("cells", [])
             if any("latency" in v for v in c.get("variants", {}).values())]
    if not cells:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, len(cells))
    nrows = (len(cells) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    for ax, cell in zip(axes.flat, cells):
        names = [k for k, v in cell["variants"].items() if "latency" in v]
        med = [cell["variants"][k]["latency"]["median_us"] for k in names]
        lo = [m - cell["variants"][k]["latency"]["p10_us"] for k, m in zip(names, med)]
        hi = [cell["variants"][k]["latency"]["p90_us"] - m for k, m in zip(names, med)]
        colors = ["#888888" if k == "unpruned" else "#d62728" if k == "locp" else "#1f77b4"
                  for k in names]
        ax.bar(range(len(names)), med, yerr=[lo, hi], color=colors, capsize=3)
        for i, k in enumerate(names):
            v = cell["variants"][k]
            ax.text(i, med[i] + hi[i], f"{v.get('speedup', 0):.2f}x\n{v['flops_ratio']:.2f}F",
                    ha="center", va="bottom", fontsize=7)
        ax.set_ylim(0, max(m + h for m, h in zip(med, hi)) * 1.2)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("latency µs (median, p10–p90)")
        ax.set_title(cell_key(cell), fontsize=9)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    devices = "; ".join(result.get("devices", {}).values())
    fig.suptitle(f"{result.get('created', '')}  {result.get('command', '')[:110]}\n{devices[:160]}",
                 fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(result: dict[str, Any], out: str | Path, *, with_plot: bool = True) -> dict[str, Path]:
    """Write results.json, results.md (and results.png) under `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result["targets"] = targets(result)
    paths = {"json": out / "results.json", "md": out / "results.md"}
    _atomic_write(paths["json"], json.dumps({"schema": SCHEMA, **result}, indent=1, default=str) + "\n")
    _atomic_write(paths["md"], markdown(result))
    if with_plot:
        png = plot(result, out / "results.png")
        if png is not None:
            paths["png"] = png
    return paths
