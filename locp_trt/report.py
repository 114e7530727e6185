"""report.json and plots for an optimize run, and the summary table `python -m locp_trt report` prints.

Every figure in a report is a measurement or a prediction made in the run that wrote it; the
report says which (`"measured"` blocks hold Timing summaries, `"predicted_us"` the layer-sum model).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .errors import LocpError

__all__ = ["REPORT_SCHEMA", "write_report", "load_report", "summary_table", "plot_history",
           "plot_group_stairs", "write_plots"]

REPORT_SCHEMA = "locp_trt.report/1"


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


def summary_table(report: Mapping[str, Any]) -> str:
    """A plain-text table: one row per step, then before/after and the measurement counts."""
    rows = [f"{'step':>4} {'latency µs':>11} {'kind':>9} {'predicted':>10} {'target':>9} "
            f"{'acc %':>6} {'MFLOPs':>8} {'params':>9}"]
    for h in report["history"]:
        measured = h.get("measured") or {}
        lat = measured.get("median_us", h["predicted_us"])
        rows.append(f"{h['step']:>4} {lat:>11.1f} {'measured' if measured else 'predicted':>9} "
                    f"{h['predicted_us']:>10.1f} {_fmt(h.get('target_us'), '9.1f'):>9} "
                    f"{_fmt(h.get('accuracy'), '6.2f'):>6} {h['flops'] / 1e6:>8.2f} {h['params']:>9}")
    r = report["result"]
    rows.append("")
    rows.append(f"speedup {r['speedup']:.2f}x, {r['speedup_kind']} "
                f"({'met' if r['met_target'] else 'MISSED'} the target: {report['target']}) "
                f"on {report['fingerprint']}")
    placed = [p for p in report.get("per_layer", []) if p.get("measured_after_us") is not None]
    if placed:
        pred = sum(p["predicted_after_us"] for p in placed)
        meas = sum(p["measured_after_us"] for p in placed)
        rows.append(f"per layer after pruning ({len(placed)} layers matched in the profiled model): "
                    f"predicted {pred:.1f} µs alone, measured {meas:.1f} µs in place")
    m = report.get("measurements", {})
    if m:
        rows.append(f"layer latencies: {m.get('requested', 0)} asked, {m.get('measured', 0)} measured, "
                    f"{m.get('store_hits', 0)} from the store, {m.get('memo_hits', 0)} shared in-run, "
                    f"{m.get('table_hits', 0)} from a lookup table")
    return "\n".join(rows)


def plot_history(history: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Latency (measured and predicted) and accuracy over the steps, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    measured = [(h["step"], h["measured"]["median_us"]) for h in history if h.get("measured")]
    if measured:
        ax.plot(*zip(*measured), "o-", label="measured end to end")
    ax.plot(steps, [h["predicted_us"] for h in history], "s--", label="predicted (layer sum)")
    targets = [(h["step"], h["target_us"]) for h in history if h.get("target_us")]
    if targets:
        ax.plot(*zip(*targets), "k:", label="step target")
    ax.set_xlabel("step")
    ax.set_ylabel("latency (µs)")
    accs = [(h["step"], h["accuracy"]) for h in history if h.get("accuracy") is not None]
    if accs:
        ax2 = ax.twinx()
        ax2.plot(*zip(*accs), "^-", color="tab:green", label="accuracy")
        ax2.set_ylabel("top-1 accuracy (%)", color="tab:green")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("latency and accuracy over pruning steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_group_stairs(stairs: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Each group's staircase (summed latency of the layers it touches vs its width), with the
    envelope widths it was offered and the width finally chosen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(stairs))
    cols = min(2, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.2 * rows), squeeze=False)
    for ax, (gid, s) in zip(axes.flat, stairs.items()):
        pts = sorted((int(w), float(v)) for w, v in s["points"].items())
        if pts:
            ax.plot(*zip(*pts), ".-", lw=0.8, label="measured")
        env = [(w, v) for w, v in pts if w in set(s.get("envelope", []))]
        if env:
            ax.plot(*zip(*env), "o", mfc="none", label="envelope")
        chosen = s.get("chosen")
        if chosen is not None and str(chosen) in {str(w) for w, _ in pts}:
            ax.axvline(int(chosen), color="tab:red", lw=1, label=f"chosen {chosen}")
        ax.set_title(gid, fontsize=9)
        ax.set_xlabel("width (channels)")
        ax.set_ylabel("µs")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(stairs):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_plots(out_dir: Path, report: Mapping[str, Any]) -> list[Path]:
    """history.png and stairs.png (where the report has staircases) in `out_dir`."""
    out_dir = Path(out_dir)
    paths = [plot_history(report["history"], out_dir / "history.png")]
    if report.get("stairs"):
        paths.append(plot_group_stairs(report["stairs"], out_dir / "stairs.png"))
    return paths
