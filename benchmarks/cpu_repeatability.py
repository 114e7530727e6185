"""How far one output folder's speedup moves when it is measured again: the floor under any
landing rule (issue 15).

Runs `locp_trt.deploy.delivered.reproduce` (what `bench OUT/` does) on one optimize output folder
K times, each in a fresh process, one after another, with B build pairs each, and prints every
figure, the per-build speedups inside each, and the spread between processes. Two checks of the
same files that disagree by more than the band's half-width mean no loop can land 90% of runs in
the band by that check alone.

  python benchmarks/cpu_repeatability.py OUT --processes 6 --builds 3 --json rep.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

_CHILD = """
import json, sys
from locp_trt.deploy.delivered import reproduce
r = reproduce(sys.argv[1], builds=int(sys.argv[2]), max_rounds=int(sys.argv[3]))
s = r.to_json()
s["per_build"] = [b.speedup for b in (r.comparison.builds or ())]
print(json.dumps(s))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="an optimize output folder (report.json, runtime.json, model.onnx)")
    p.add_argument("--processes", type=int, default=6)
    p.add_argument("--builds", type=int, default=3)
    p.add_argument("--max-rounds", type=int, default=12)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    rows = []
    for i in range(a.processes):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(a.out), str(a.builds), str(a.max_rounds)],
                              capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        builds = " ".join(f"{v:.3f}" for v in row["per_build"])
        print(f"process {i}: {row['speedup']:.3f}x ({row['speedup_low']:.3f}-{row['speedup_high']:.3f}), "
              f"builds {builds}, {row['rounds']} rounds, {row['wall_s']} s", flush=True)
    logs = [math.log(r["speedup"]) for r in rows]
    sd = statistics.stdev(logs) if len(logs) > 1 else float("nan")
    builds = [math.log(v) for r in rows for v in r["per_build"]]
    sd_b = statistics.stdev(builds) if len(builds) > 1 else float("nan")
    summary = {"out": str(a.out), "processes": a.processes, "builds": a.builds,
               "speedups": [round(r["speedup"], 4) for r in rows],
               "process_sd_pct": round(100 * sd, 2), "build_sd_pct": round(100 * sd_b, 2),
               "range_pct": round(100 * (max(logs) - min(logs)), 2),
               "reported": rows[0]["reported_speedup"]}
    print(json.dumps(summary))
    if a.json:
        a.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
