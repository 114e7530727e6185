"""Issue 21's reading of one optimize cell run alone and under torchrun: each run's world size,
backend, status, final speedup, MFLOPs, test accuracy after pruning and fine-tune seconds, then
the accuracy gap and the fine-tune speedup against the issue's bars (same accuracy within 0.5
points; with 2 or more ranks, the fine-tuning phase at least 1.8x faster than alone), and whether
the two runs emitted the same widths (plan.json beside each report.json): live timing decides each
step, and each step's importances are scored after the fine-tunes before it (which differ when
the data is split over ranks), so two runs of one cell can prune differently, and then neither
their accuracies nor their fine-tunes are like for like (a `--latency-table` run takes timing out).

    python benchmarks/ddp_compare.py SINGLE/report.json TORCHRUN/report.json [--json OUT]

Exit 0 when the bars hold, 3 when one does not, 1 when a report lacks what is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ACCURACY_POINTS = 0.5
FINETUNE_SPEEDUP = 1.8


@dataclass
class Cell:
    """What one run's report.json says about its fine-tuning and where it landed."""

    world_size: int
    backend: str | None
    status: str
    speedup: float
    accuracy_after: float
    finetune_s: float
    steps: int
    mflops: float | None = None
    widths: dict[str, int] | None = None  # the emitted plan's, when its plan.json was read

    @classmethod
    def from_report(cls, report: dict[str, Any], plan: dict[str, Any] | None = None) -> Cell:
        res, dist = report["result"], report.get("distributed") or {}
        if res.get("accuracy_after") is None:
            raise ValueError("the run has no test accuracy: run optimize with --data")
        ft = dist.get("finetune_s") or {}
        if ft.get("total") is None:
            raise ValueError("the report has no distributed.finetune_s: run optimize on this main")
        return cls(int(dist.get("world_size", 1)), dist.get("backend"), res["status"],
                   float(res["speedup"]), float(res["accuracy_after"]), float(ft["total"]),
                   len(ft.get("per_step") or {}),
                   None if res.get("flops_after") is None else round(res["flops_after"] / 1e6, 2),
                   None if plan is None else {k: int(v) for k, v in plan["widths"].items()})


@dataclass
class Comparison:
    single: Cell
    torchrun: Cell
    accuracy_gap: float
    finetune_speedup: float
    accuracy_ok: bool
    speed_ok: bool | None  # None: one rank, no speed bar
    same_plan: bool | None = None  # None: a plan.json was not read

    @property
    def ok(self) -> bool:
        return self.accuracy_ok and self.speed_ok is not False


def compare(single: Cell, torchrun: Cell) -> Comparison:
    gap = torchrun.accuracy_after - single.accuracy_after
    fast = single.finetune_s / torchrun.finetune_s if torchrun.finetune_s > 0 else float("inf")
    speed_ok = fast >= FINETUNE_SPEEDUP if torchrun.world_size > 1 else None
    same = None if single.widths is None or torchrun.widths is None else single.widths == torchrun.widths
    return Comparison(single, torchrun, round(gap, 2), round(fast, 3), abs(gap) <= ACCURACY_POINTS, speed_ok,
                      same)


def lines(c: Comparison) -> list[str]:
    out = ["| run | ranks | backend | status | speedup | MFLOPs | test accuracy | steps | fine-tune s |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, cell in (("alone", c.single), ("torchrun", c.torchrun)):
        mflops = "-" if cell.mflops is None else f"{cell.mflops:.2f}"
        out.append(f"| {name} | {cell.world_size} | {cell.backend or '-'} | {cell.status} | "
                   f"{cell.speedup:.3f}x | {mflops} | {cell.accuracy_after:.2f}% | {cell.steps} | "
                   f"{cell.finetune_s:.1f} |")
    out.append(f"accuracy: torchrun {c.accuracy_gap:+.2f} points against alone "
               f"({'within' if c.accuracy_ok else 'outside'} {ACCURACY_POINTS})")
    speed = (f"fine-tuning {c.finetune_speedup:.2f}x as fast as alone" +
             ("" if c.speed_ok is None else
              f" ({'meets' if c.speed_ok else 'below'} {FINETUNE_SPEEDUP}x for {c.torchrun.world_size} ranks)"))
    if c.single.steps != c.torchrun.steps:
        speed += " (the runs took different numbers of steps: their fine-tunes are not the same work)"
    out.append(speed)
    if c.same_plan is not None:
        out.append("plans: the same widths (one pruning, so the gap is the launch's own)" if c.same_plan else
                   f"plans: {_differing(c.single.widths or {}, c.torchrun.widths or {})} of the plan's "
                   f"{len(c.single.widths or {})} widths differ (the runs decided differently: live timing, or "
                   "importances scored after fine-tunes that differed): the gap is between two prunings, "
                   "not only between alone and torchrun")
    return out


def _differing(a: dict[str, int], b: dict[str, int]) -> int:
    return sum(1 for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _plan_beside(report: Path) -> dict[str, Any] | None:
    plan = report.with_name("plan.json")
    return json.loads(plan.read_text()) if plan.is_file() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("single", type=Path, help="report.json of the run without torchrun")
    p.add_argument("torchrun", type=Path, help="report.json of the same run under torchrun")
    p.add_argument("--json", type=Path, help="also write the comparison here")
    a = p.parse_args(argv)
    try:
        cells = [Cell.from_report(json.loads(f.read_text()), _plan_beside(f)) for f in (a.single, a.torchrun)]
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = compare(*cells)
    print("\n".join(lines(c)))
    if a.json:
        a.json.write_text(json.dumps({**asdict(c), "ok": c.ok}, indent=1) + "\n")
    return 0 if c.ok else 3


if __name__ == "__main__":
    raise SystemExit(main())
