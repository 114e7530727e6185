"""How repeatable are lookup tables of one machine? Per-config agreement between tables, and the
layer-sum speedup each table gives one plan of the built-in example.

    python benchmarks/table_repeatability.py T1.json T2.json T3.json \
        --plan benchmarks/results/cpu_table_mode_example/plan.json

Tables of the same configs (`profile example` on one machine, any `--passes`). For each pair:
the ratio of each config's median between the two tables (p10-p90, and the share more than 20%
apart); for each table: the plan's layer sum over the unpruned model's, as a speedup.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pair_agreement(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Per-config ratio a/b over the configs both tables hold: p10, p90, share beyond 20%."""
    keys = sorted(k for k in set(a) & set(b) if a[k] > 0 and b[k] > 0)
    if not keys:
        raise ValueError("the two tables hold no config in common: profile the same configs")
    r = np.array([a[k] / b[k] for k in keys])
    far = np.maximum(r, 1 / r) > 1.2
    return {"configs": len(keys), "p10": round(float(np.percentile(r, 10)), 3),
            "p90": round(float(np.percentile(r, 90)), 3), "share_over_20pct": round(float(far.mean()), 4)}


def _medians(path: Path) -> dict[str, float]:
    doc = json.loads(path.read_text())
    return {json.dumps(e["config"], sort_keys=True): float(e["median_us"]) for e in doc["entries"]}


def plan_speedup(table: Path, plan: Path) -> float:
    """The unpruned example's layer sum over the plan's, on `table`."""
    from benchmarks.table_anchor_probe import example_widths
    from locp_trt.latency.meter import LatencyTable
    from locp_trt.method.calibration import Calibration

    _, graph, widths = example_widths(plan)
    lut = LatencyTable.load(table)
    cal = Calibration(lambda cfg: lut.require(cfg).median_us)
    return cal.terms(graph, widths["unpruned"])[0] / cal.terms(graph, widths["plan"])[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="+", type=Path)
    p.add_argument("--plan", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    a = p.parse_args(argv)
    meds = {str(t): _medians(t) for t in a.tables}
    out: dict[str, Any] = {"command": sys.argv, "pairs": {}, "plan_speedup": {}}
    for x, y in itertools.combinations(meds, 2):
        ag = pair_agreement(meds[x], meds[y])
        out["pairs"][f"{x} / {y}"] = ag
        print(f"{x} / {y}: per-config ratio p10-p90 {ag['p10']:.3f}-{ag['p90']:.3f}, "
              f"{ag['share_over_20pct']:.0%} more than 20% apart ({ag['configs']} configs)")
    for t in a.tables:
        s = plan_speedup(t, a.plan)
        out["plan_speedup"][str(t)] = round(s, 4)
        print(f"{t}: the plan's layer-sum speedup {s:.3f}x")
    speeds = list(out["plan_speedup"].values())
    if len(speeds) > 1:
        print(f"plan's speedup across tables: {min(speeds):.3f}-{max(speeds):.3f}x "
              f"({max(speeds) / min(speeds) - 1:.1%} apart)")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
