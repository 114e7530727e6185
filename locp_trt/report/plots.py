"""The figures of a run (matplotlib, Agg backend, imported when drawing so `import locp_trt` stays
light): history.png and stairs.png from report.json alone, and one staircase (`stairs --plot`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError
from ..method.stairs import Staircase
from .files import status_words

__all__ = ["plot_history", "plot_group_stairs", "StairsPanel", "stairs_panels", "STAIRS_YLABEL",
           "STAIRS_TITLE", "write_plots", "history_plot", "HistoryPlot", "plot_staircase"]


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
    title = (f"{model.get('arch') or model.get('source', 'model')}: {r['speedup']:.3f}x "
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
            ax.plot(*zip(*p.envelope_points), "o", mfc="none", ms=9, color="tab:orange", zorder=4,
                    label=f"envelope (step {p.step})")  # drawn around the star, not hidden by it
        if p.chosen is not None:
            ax.axvline(p.chosen, color="tab:red", lw=1, label=f"final width {p.chosen}")
            if p.chosen_us is not None:
                ax.plot([p.chosen], [p.chosen_us], "*", ms=7, color="tab:red", zorder=3)
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


def plot_staircase(
    stair: Staircase,
    path: str | Path,
    envelope: Iterable[int] | None = None,
    chosen: int | None = None,
    title: str = "",
    xlabel: str = "channels",
) -> Path:
    """Draw latency (µs) against width, with the envelope and a chosen width marked.

    Args:
        stair: the staircase (spreads, when present, are drawn as error bars).
        path: output image (.png, .svg or .pdf); parent folders are created.
        envelope: widths to mark as the Pareto envelope.
        chosen: one width to highlight (e.g. the width a plan picked).
        title: figure title.
        xlabel: x-axis label (which channel count the widths are).

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(path)
    if out.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise InvalidConfigError(f"plot path {out} must end in .png, .svg or .pdf")
    lat = stair.as_dict()
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    try:
        ax.plot(stair.widths, stair.latencies_us, drawstyle="steps-mid", color="0.6", lw=1, zorder=1)
        if stair.spreads_us is not None:
            ax.errorbar(stair.widths, stair.latencies_us, yerr=[s / 2 for s in stair.spreads_us],
                        fmt="none", ecolor="0.75", lw=0.8, zorder=1)
        ax.scatter(stair.widths, stair.latencies_us, s=10, color="tab:blue", zorder=2, label="measured")
        env = [w for w in (envelope or ()) if w in lat]
        if env:
            ax.scatter(env, [lat[w] for w in env], s=110, facecolors="none", edgecolors="tab:red",
                       lw=1.5, zorder=4, label="envelope")  # a ring around the chosen star
        if chosen is not None and chosen in lat:
            ax.scatter([chosen], [lat[chosen]], marker="*", s=70, color="tab:green", zorder=3,
                       label=f"chosen ({chosen})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("latency (µs)")
        if title:
            ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
