"""Issue 21's reading of one optimize cell run alone and under torchrun: each run's world size,
backend, status, final speedup, test accuracy after pruning and fine-tune seconds, then the
accuracy gap and the fine-tune speedup against the issue's bars (same accuracy within 0.5
points; with 2 or more ranks, the fine-tuning phase at least 1.8x faster than alone).

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

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Cell:
        res, dist = report["result"], report.get("distributed") or {}
        if res.get("accuracy_after") is None:
            raise ValueError("the run has no test accuracy: run optimize with --data")
        ft = dist.get("finetune_s") or {}
        if ft.get("total") is None:
            raise ValueError("the report has no distributed.finetune_s: run optimize on this main")
        return cls(int(dist.get("world_size", 1)), dist.get("backend"), res["status"],
                   float(res["speedup"]), float(res["accuracy_after"]), float(ft["total"]),
                   len(ft.get("per_step") or {}))


@dataclass
class Comparison:
    single: Cell
    torchrun: Cell
    accuracy_gap: float
    finetune_speedup: float
    accuracy_ok: bool
    speed_ok: bool | None  # None: one rank, no speed bar

    @property
    def ok(self) -> bool:
        return self.accuracy_ok and self.speed_ok is not False


def compare(single: Cell, torchrun: Cell) -> Comparison:
    gap = torchrun.accuracy_after - single.accuracy_after
    fast = single.finetune_s / torchrun.finetune_s if torchrun.finetune_s > 0 else float("inf")
    speed_ok = fast >= FINETUNE_SPEEDUP if torchrun.world_size > 1 else None
    return Comparison(single, torchrun, round(gap, 2), round(fast, 3), abs(gap) <= ACCURACY_POINTS, speed_ok)


def lines(c: Comparison) -> list[str]:
    out = ["| run | ranks | backend | status | speedup | test accuracy | steps | fine-tune s |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, cell in (("alone", c.single), ("torchrun", c.torchrun)):
        out.append(f"| {name} | {cell.world_size} | {cell.backend or '-'} | {cell.status} | "
                   f"{cell.speedup:.3f}x | {cell.accuracy_after:.2f}% | {cell.steps} | {cell.finetune_s:.1f} |")
    out.append(f"accuracy: torchrun {c.accuracy_gap:+.2f} points against alone "
               f"({'within' if c.accuracy_ok else 'outside'} {ACCURACY_POINTS})")
    speed = (f"fine-tuning {c.finetune_speedup:.2f}x as fast as alone" +
             ("" if c.speed_ok is None else
              f" ({'meets' if c.speed_ok else 'below'} {FINETUNE_SPEEDUP}x for {c.torchrun.world_size} ranks)"))
    if c.single.steps != c.torchrun.steps:
        speed += " (the runs took different numbers of steps: their fine-tunes are not the same work)"
    out.append(speed)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("single", type=Path, help="report.json of the run without torchrun")
    p.add_argument("torchrun", type=Path, help="report.json of the same run under torchrun")
    p.add_argument("--json", type=Path, help="also write the comparison here")
    a = p.parse_args(argv)
    try:
        cells = [Cell.from_report(json.loads(f.read_text())) for f in (a.single, a.torchrun)]
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
