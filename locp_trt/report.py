"""report.json and plots for an optimize run, and the summary table `python -m locp_trt report` prints.

Every figure in a report is a measurement or a prediction made in the run that wrote it; the
report says which (`"measured"` blocks hold Timing summaries, `"predicted_us"` the layer-sum model).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import LocpError

__all__ = ["REPORT_SCHEMA", "write_report", "load_report", "summary_table", "plot_history",
           "plot_group_stairs", "StairsPanel", "stairs_panels", "STAIRS_YLABEL", "STAIRS_TITLE", "write_plots",
           "history_plot", "HistoryPlot"]

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
    """'landed in the band of' / 'OVERSHOT the band of' / 'MISSED' for the result block (older
    reports without a status read from met_target)."""
    status = result.get("status") or ("landed" if result.get("met_target") else "missed")
    return {"landed": "met the target", "overshot": "OVERSHOT the band of the target"}.get(
        status, "MISSED the target")


def summary_table(report: Mapping[str, Any]) -> str:
    """A plain-text table: one row per step (* marks the emitted one), then the headline (the
    final interleaved comparison: the report's one source of truth), before -> after, counts."""
    r = report["result"]
    rows = [f"{'step':>5} {'speedup':>8} {'kind':>9} {'latency µs':>11} {'predicted':>10} {'goal':>6} "
            f"{'val %':>6} {'test %':>6} {'MFLOPs':>8} {'params':>9}"]
    for h in report["history"]:
        measured = h.get("measured") or {}
        lat = measured.get("median_us", h["predicted_us"])
        mark = "*" if h.get("emitted") else ("x" if h.get("guard_rejected") else " ")
        rows.append(f"{mark}{h['step']:>4} {_fmt(h.get('speedup'), '7.3f'):>7}x "
                    f"{h.get('kind', 'measured' if measured else 'predicted'):>9} {lat:>11.1f} "
                    f"{h['predicted_us']:>10.1f} {_fmt(h.get('goal_speedup'), '5.2f'):>5}x "
                    f"{_fmt(h.get('val_accuracy'), '6.2f'):>6} {_fmt(h.get('accuracy'), '6.2f'):>6} "
                    f"{h['flops'] / 1e6:>8.2f} {h['params']:>9}")
    rows.append("(* emitted step; x refused by the accuracy guard; per-step figures are the loop's own "
                "comparisons, the headline below is the final one)")
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
    placed = [p for p in report.get("per_layer", []) if p.get("measured_after_us") is not None]
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


@dataclass(frozen=True)
class HistoryPlot:
    """What history.png draws; `history_plot` computes it, so it can be checked."""

    title: str
    steps: tuple[int, ...]  # integer x ticks
    speedup: tuple[tuple[int, float], ...]  # per step: the loop's comparison (or prediction)
    kind: str  # measured | predicted
    predicted: tuple[tuple[int, float], ...]  # layer-sum speedup per step
    target: float
    band: tuple[float, float]  # [target, target x (1 + tolerance)]
    headline: tuple[int, float]  # (emitted step, the report's final speedup)
    headline_label: str
    accuracy: tuple[tuple[int, float], ...]  # test accuracy per step ({} without data)
    val_accuracy: tuple[tuple[int, float], ...]


def history_plot(report: Mapping[str, Any]) -> HistoryPlot:
    """The data of history.png, from report.json alone."""
    r = report["result"]
    hist = report["history"]
    base_pred = hist[0]["predicted_us"]
    kind = "measured" if any(h.get("measured") for h in hist) else "predicted"
    model = report.get("model", {})
    title = (f"{model.get('arch') or model.get('source', 'model')}: {r['speedup']:.2f}x "
             f"({status_words(r)} {r['target_speedup']:.3g}x)\n"
             f"{report.get('runtime') or 'lookup table'} on "
             f"{(report.get('fingerprint_detail') or {}).get('device', '?')}, "
             f"{report.get('precision', '')}, batch {report.get('batch', '')}")
    return HistoryPlot(
        title=title, steps=tuple(int(h["step"]) for h in hist),
        speedup=tuple((int(h["step"]), float(h["speedup"])) for h in hist if h.get("speedup") is not None),
        kind=kind,
        predicted=tuple((int(h["step"]), base_pred / h["predicted_us"]) for h in hist if h["predicted_us"] > 0),
        target=float(r["target_speedup"]),
        band=(float(r["target_speedup"]), float(r["target_speedup"]) * (1 + float(r.get("tolerance", 0)))),
        headline=(int(r["chosen_step"]), float(r["speedup"])),
        headline_label=f"final: {r['speedup']:.3f}x, {r['speedup_kind']}",
        accuracy=tuple((int(h["step"]), float(h["accuracy"])) for h in hist if h.get("accuracy") is not None),
        val_accuracy=tuple((int(h["step"]), float(h["val_accuracy"])) for h in hist
                           if h.get("val_accuracy") is not None),
    )


def plot_history(report: Mapping[str, Any], path: Path) -> Path:
    """Speedup per step (the loop's comparisons), the target and its tolerance band, the final
    headline at the emitted step, and accuracy where data was given: one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = history_plot(report)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    ax.axhspan(*d.band, color="tab:green", alpha=0.12, label=f"target {d.target:.3g}x, tolerance band")
    ax.axhline(d.target, color="tab:green", lw=1)
    if d.speedup:
        ax.plot(*zip(*d.speedup), "o-", color="tab:blue", label=f"speedup per step ({d.kind}, interleaved)"
                if d.kind == "measured" else "speedup per step (predicted)")
    ax.plot(*zip(*d.predicted), "s--", color="0.5", ms=4, lw=1, label="predicted (layer sum)")
    ax.plot([d.headline[0]], [d.headline[1]], "*", color="tab:red", ms=16, label=d.headline_label)
    ax.set_xticks(list(d.steps))
    ax.set_xlabel("step (0: unpruned)")
    ax.set_ylabel("speedup over the unpruned model (x)")
    handles, labels = ax.get_legend_handles_labels()
    if d.accuracy or d.val_accuracy:
        ax2 = ax.twinx()
        if d.val_accuracy:
            ax2.plot(*zip(*d.val_accuracy), "^-", color="tab:purple", label="validation accuracy")
        if d.accuracy:
            ax2.plot(*zip(*d.accuracy), "v:", color="tab:olive", label="test accuracy")
        ax2.set_ylabel("top-1 accuracy (%)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.set_title(d.title, fontsize=9)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


#: stairs.png's y axis: a panel shows the sum over the layers a group touches, not one layer.
STAIRS_YLABEL = "summed latency of the group's layers (µs)"
#: stairs.png's title.
STAIRS_TITLE = ("Latency staircases of the costliest channel groups, each at the step that set its final width\n"
                "(other groups at the widths that step started from); dots: measured widths (lines join "
                "consecutive widths only);\ncircles: envelope widths offered at that step; red: final width")


@dataclass(frozen=True)
class StairsPanel:
    """What one panel of stairs.png draws; `stairs_panels` computes it, so it can be checked."""

    group: str
    title: str
    points: tuple[tuple[int, float], ...]  # (width, µs) measured, ascending width
    runs: tuple[tuple[tuple[int, float], ...], ...]  # points of consecutive widths: joined by a line
    envelope: tuple[int, ...]  # envelope widths offered at `step`, all of them
    envelope_points: tuple[tuple[int, float], ...]  # the offered widths that have a measured point
    chosen: int | None  # the group's final width
    chosen_us: float | None  # its point, where measured in the panel's context (see `step`)
    xlim: tuple[float, float]  # holds every point, every offered width and the chosen width
    step: int = 1  # the step whose staircase (points, envelope) the panel draws


def _runs(points: Sequence[tuple[int, float]]) -> tuple[tuple[tuple[int, float], ...], ...]:
    """Split points into runs of consecutive widths: points far apart (sparse three-point
    probes) are not joined, a line between them would invent a slope nobody measured."""
    runs: list[list[tuple[int, float]]] = []
    for w, v in points:
        if runs and w == runs[-1][-1][0] + 1:
            runs[-1].append((w, v))
        else:
            runs.append([(w, v)])
    return tuple(tuple(r) for r in runs)


def stairs_panels(stairs: Mapping[str, Mapping[str, Any]],
                  chosen_steps: Mapping[str, int] | None = None) -> list[StairsPanel]:
    """The panels of stairs.png from a report's "stairs" block.

    Args:
        stairs: group id -> {"step": the step drawn, "points": {width: µs} as that step saw them,
            "envelope": [widths offered at that step], "chosen": final width} (widths may be JSON
            strings). Reports written before "step" was recorded drew step 1.
        chosen_steps: group id -> the step that set its final width, for the panel titles (where
            the stairs block does not say).
    """
    panels = []
    for gid, s in stairs.items():
        pts = tuple(sorted((int(w), float(v)) for w, v in (s.get("points") or {}).items()))
        lat = dict(pts)
        env = tuple(sorted({int(w) for w in s.get("envelope") or ()}))
        chosen = None if s.get("chosen") is None else int(s["chosen"])
        widths = [w for w, _ in pts] + list(env) + ([chosen] if chosen is not None else [])
        lo, hi = (min(widths), max(widths)) if widths else (0, 1)
        pad = max(1.0, 0.03 * (hi - lo))
        full = max(env) if env else (max(lat) if lat else None)
        if chosen is None:
            title = f"{gid}: not in the final plan"
        elif chosen == full:
            title = f"{gid}: kept at {chosen} channels"
        else:
            title = f"{gid}: {full} -> {chosen} channels"
        drawn = int(s["step"]) if s.get("step") is not None else 1
        step = s.get("step") if s.get("step") is not None else (chosen_steps or {}).get(gid)
        if step is not None and chosen != full:
            title += f" (chosen at step {step})"
        panels.append(StairsPanel(
            group=gid, title=title, points=pts, runs=_runs(pts), envelope=env,
            envelope_points=tuple((w, lat[w]) for w in env if w in lat), chosen=chosen,
            chosen_us=lat.get(chosen) if chosen is not None else None, xlim=(lo - pad, hi + pad),
            step=drawn))
    return panels


def _stairs_figure(panels: Sequence[StairsPanel]):
    """A matplotlib Figure drawing `panels` (two columns), titled `STAIRS_TITLE`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(panels))
    cols = min(2, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.4 * rows + 0.7), squeeze=False)
    for ax, p in zip(axes.flat, panels):
        for run in p.runs:
            if len(run) > 1:
                ax.plot(*zip(*run), "-", lw=0.8, color="tab:blue", alpha=0.6)
        if p.points:
            ax.plot(*zip(*p.points), ".", color="tab:blue", label="measured")
        if p.envelope_points:
            ax.plot(*zip(*p.envelope_points), "o", mfc="none", color="tab:orange", label=f"envelope (step {p.step})")
        if p.chosen is not None:
            ax.axvline(p.chosen, color="tab:red", lw=1, label=f"final width {p.chosen}")
            if p.chosen_us is not None:
                ax.plot([p.chosen], [p.chosen_us], "*", ms=11, color="tab:red")
        ax.set_xlim(*p.xlim)
        ax.set_title(p.title, fontsize=9)
        ax.set_xlabel("group width (channels)")
        ax.set_ylabel(STAIRS_YLABEL, fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(STAIRS_TITLE, fontsize=9)
    fig.tight_layout()
    return fig


def plot_group_stairs(stairs: Mapping[str, Mapping[str, Any]], path: Path,
                      chosen_steps: Mapping[str, int] | None = None) -> Path:
    """Each group's staircase (summed latency of the layers it touches vs its width), with the
    envelope widths it was offered and the width finally chosen (see `stairs_panels`)."""
    import matplotlib.pyplot as plt

    fig = _stairs_figure(stairs_panels(stairs, chosen_steps))
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return Path(path)


def write_plots(out_dir: Path, report: Mapping[str, Any]) -> list[Path]:
    """history.png and stairs.png (where the report has staircases) in `out_dir`."""
    out_dir = Path(out_dir)
    paths = [plot_history(report, out_dir / "history.png")]
    if report.get("stairs"):
        steps = {gid: c["step"] for gid, c in (report.get("envelope_check") or {}).items()}
        paths.append(plot_group_stairs(report["stairs"], out_dir / "stairs.png", steps))
    return paths
