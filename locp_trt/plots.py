"""Figures (matplotlib, Agg backend, imported lazily so `import locp_trt` stays light)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import InvalidConfigError
from .stairs import Staircase

__all__ = ["plot_staircase"]


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
            ax.scatter(env, [lat[w] for w in env], s=40, facecolors="none", edgecolors="tab:red",
                       lw=1.5, zorder=3, label="envelope")
        if chosen is not None and chosen in lat:
            ax.scatter([chosen], [lat[chosen]], marker="*", s=160, color="tab:green", zorder=4,
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
