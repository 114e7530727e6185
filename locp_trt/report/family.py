"""family.json and family.png of a family run (`optimize --speedup 1.5,2,2.5`): one row per member,
read from the members' own report.json, with the Pareto front of speedup against accuracy (or
against the importance lost, without data) marked; the summary `report OUT` prints for a family.

No torch here: the family's report is built from the members' reports (`member_row`).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import LocpError

__all__ = ["FAMILY_SCHEMA", "STATUS_ORDER", "worst_status", "member_row", "mark_pareto", "family_doc",
           "write_family", "load_family", "family_summary", "plot_family", "is_family"]

FAMILY_SCHEMA = "locp_trt.family/1"
#: Member statuses from best to worst; a family's status is its worst member's.
STATUS_ORDER = ("landed", "overshot", "missed", "refused", "failed")


def worst_status(statuses: Sequence[str]) -> str:
    """The worst of the members' statuses (`STATUS_ORDER`); 'failed' for an empty family."""
    return max(statuses, key=STATUS_ORDER.index) if statuses else "failed"


def member_row(label: str, target: Mapping[str, Any], folder: str, report: Mapping[str, Any] | None, *,
               status: str | None = None, why: str = "", continued_from: str | None = None,
               wall_s: float | None = None) -> dict[str, Any]:
    """One member of family.json, from its report.json (None: the member was refused or failed
    before it wrote one; then `status` and `why` say so)."""
    row: dict[str, Any] = {"label": label, "target": dict(target), "folder": folder,
                           "continued_from": continued_from, "wall_s": None if wall_s is None else round(wall_s, 2)}
    if report is None:
        return {**row, "status": status or "failed", "why": why, "speedup": None}
    r = report["result"]
    final = next((h for h in report.get("history", []) if h.get("emitted")), None) or {}
    devices = report.get("devices")
    return {**row, "status": r.get("status", "missed"), "why": r.get("why_missed") or why,
            "target_speedup": r.get("target_speedup"), "speedup": r.get("speedup"),
            "speedup_low": r.get("speedup_low"), "speedup_high": r.get("speedup_high"),
            "speedup_kind": r.get("speedup_kind"), "accuracy": r.get("accuracy_after"),
            "val_accuracy": r.get("val_accuracy_after"), "importance_lost": final.get("importance_lost"),
            "flops": r.get("flops_after"), "params": r.get("params_after"), "chosen_step": r.get("chosen_step"),
            "devices": [{"device": d["device"], "predicted_speedup": d["predicted_speedup"],
                         "measured_speedup": (d.get("measured") or {}).get("speedup")} for d in devices]
            if devices else None}


def _quality(row: Mapping[str, Any], axis: str) -> float | None:
    if axis == "accuracy":
        return row.get("accuracy")
    lost = row.get("importance_lost")
    return None if lost is None else -lost


def mark_pareto(rows: list[dict[str, Any]], axis: str) -> None:
    """Set each row's `pareto`: no other member is at least as fast and as good on `axis` and
    strictly better in one (members without a figure are never on the front)."""
    pts = [(i, r["speedup"], _quality(r, axis)) for i, r in enumerate(rows)
           if r.get("speedup") is not None and _quality(r, axis) is not None]
    for r in rows:
        r["pareto"] = False
    for i, s, q in pts:
        dominated = any(s2 >= s and q2 >= q and (s2 > s or q2 > q) for j, s2, q2 in pts if j != i)
        rows[i]["pareto"] = not dominated


def family_doc(rows: list[dict[str, Any]], *, continuation: str, shared: Mapping[str, Any],
               total_s: float, facts: Mapping[str, Any]) -> dict[str, Any]:
    """family.json's content: the members (Pareto front marked), how they continue from each
    other, what they shared, and the family's status (its worst member's)."""
    axis = "accuracy" if any(r.get("accuracy") is not None for r in rows) else "importance_lost"
    mark_pareto(rows, axis)
    return {"schema": FAMILY_SCHEMA,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "",
            **dict(facts), "status": worst_status([r["status"] for r in rows]), "quality_axis": axis,
            "continuation": continuation, "shared": dict(shared), "timings": {"total_s": round(total_s, 2)},
            "members": rows}


def write_family(out: Path, doc: Mapping[str, Any]) -> Path:
    path = Path(out) / "family.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def is_family(path: Path) -> bool:
    """Whether `path` is a family's folder (or its family.json)."""
    path = Path(path)
    return (path / "family.json").is_file() if path.is_dir() else path.name == "family.json"


def load_family(path: Path) -> dict[str, Any]:
    """Read a family.json (or the one inside a family's folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "family.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LocpError(f"{path} is not a readable family report ({e})") from None
    if doc.get("schema") != FAMILY_SCHEMA:
        raise LocpError(f"{path} has schema {doc.get('schema')!r}, expected {FAMILY_SCHEMA!r}")
    return doc


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def family_summary(doc: Mapping[str, Any]) -> str:
    """A plain-text table, one row per member (P: on the Pareto front), and the family's status."""
    axis = doc.get("quality_axis", "accuracy")
    rows = [f"  {'target':>8} {'status':>9} {'speedup':>8} {'90% CI':>13} {'kind':>10} "
            f"{'test %' if axis == 'accuracy' else 'imp. lost':>9} {'MFLOPs':>8} {'params':>9}  folder"]
    for r in doc["members"]:
        ci = (f"{r['speedup_low']:.3f}-{r['speedup_high']:.3f}" if r.get("speedup_low") is not None else "-")
        kind = "measured" if (r.get("speedup_kind") or "").startswith("measured") else (
            "predicted" if r.get("speedup") is not None else "-")
        quality = r.get("accuracy") if axis == "accuracy" else r.get("importance_lost")
        rows.append(f"{'P' if r.get('pareto') else ' '} {r['label']:>8} {r['status']:>9} "
                    f"{_f(r.get('speedup'), '7.3f'):>7}x {ci:>13} {kind:>10} "
                    f"{_f(quality, '9.2f' if axis == 'accuracy' else '9.3f'):>9} "
                    f"{_f(r.get('flops') and r['flops'] / 1e6, '8.2f'):>8} {_f(r.get('params'), '9d'):>9}  "
                    f"{r['folder']}")
        for d in r.get("devices") or []:
            measured = d.get("measured_speedup")
            rows.append(f"{'':>12} device {d['device']}: {d['predicted_speedup']:.3f}x predicted"
                        + (f", {measured:.3f}x measured" if measured is not None else ", only predicted"))
        if r["status"] != "landed" and r.get("why"):
            rows.append(f"{'':>12} why: {r['why']}")
    rows.append("(P: on the Pareto front of speedup against "
                + ("test accuracy" if axis == "accuracy" else "importance lost (no data: no accuracy)") + ")")
    counts = {s: sum(1 for r in doc["members"] if r["status"] == s) for s in STATUS_ORDER}
    said = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    rows.append(f"family of {len(doc['members'])}: {said}; status {doc['status']} (the worst member's); "
                f"members {doc.get('continuation', '')}; {doc['timings']['total_s']:.0f} s in all")
    return "\n".join(rows)


def plot_family(doc: Mapping[str, Any], path: Path) -> Path:
    """family.png: each member's speedup (with its interval) against accuracy, or against the
    importance lost (axis reversed: up is better) without data; the Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = doc.get("quality_axis", "accuracy")
    members = [r for r in doc["members"] if r.get("speedup") is not None and _quality(r, axis) is not None]
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for r in members:
        y = r["accuracy"] if axis == "accuracy" else r["importance_lost"]
        lo, hi = r.get("speedup_low"), r.get("speedup_high")
        xerr = [[r["speedup"] - lo], [hi - r["speedup"]]] if lo is not None and hi is not None else None
        ax.errorbar([r["speedup"]], [y], xerr=xerr, fmt="o" if r["status"] == "landed" else "x",
                    color="tab:blue" if r["pareto"] else "0.5", capsize=4, ms=8)
        ax.annotate(f"{r['label']} ({r['status']})", (r["speedup"], y), textcoords="offset points",
                    xytext=(6, 6), fontsize=9)
        ax.axvline(r["target_speedup"], color="tab:green", lw=0.8, ls=":")
    front = sorted((r for r in members if r["pareto"]), key=lambda r: r["speedup"])
    if front:
        ys = [r["accuracy"] if axis == "accuracy" else r["importance_lost"] for r in front]
        ax.plot([r["speedup"] for r in front], ys, "-", color="tab:blue", lw=1.5, label="Pareto front")
    kind = "measured, 90% interval" if any((r.get("speedup_kind") or "").startswith("measured")
                                            for r in members) else "predicted"
    ax.set_xlabel(f"speedup over the unpruned model ({kind}); dotted: each target")
    if axis == "accuracy":
        ax.set_ylabel("test accuracy (%)")
    else:
        ax.set_ylabel("importance lost (weighed L1 share; lower is better)")
        ax.invert_yaxis()
    ax.set_title(f"{doc.get('model', {}).get('arch') or doc.get('model', {}).get('source', 'model')}: "
                 f"family of {len(doc['members'])}, status {doc['status']}\n{doc.get('runtime') or 'lookup table'}")
    if front:
        ax.legend(loc="best", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
