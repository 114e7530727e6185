"""Does the quiet-state rule (`OrtCpuRuntime.QUIET_SLACK`) help `optimize` land on this machine?

README command 1's job (`optimize example --device cpu`, 2x by default) is run in pairs: arm
`quiet` as shipped, arm `plain` with `QUIET_SLACK = 0` (every build pair judged). The arms' order
alternates pair by pair (quiet first, then plain first, ...) so that both see the same machine,
each run with an empty latency store of its own. Afterwards every output folder is re-measured in
this process the way `bench OUT/` does (`locp_trt.deploy.delivered.reproduce`, the shipped rule
for both arms): the delivered speedup. Why (issue 16): the CPU landing benchmark cannot separate
the rule from the development VM's hour-to-hour noise; pairs run side by side can.

    python benchmarks/cpu_quiet_ab.py --pairs 6 --out DIR [--speedup 2]

Writes DIR/results.json (every run) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BAND = 1.10  # the default --tolerance: a run lands when target <= delivered <= 1.1 x target

#: Runs the CLI with the arm's rule: argv[1] is the arm, the rest the CLI's arguments.
_LAUNCH = """
import runpy, sys
arm = sys.argv[1]
if arm == "plain":
    from locp_trt.latency.runtimes.onnxrt import OrtCpuRuntime
    OrtCpuRuntime.QUIET_SLACK = 0.0
sys.argv = ["locp_trt", *sys.argv[2:]]
runpy.run_module("locp_trt", run_name="__main__")
"""


def run_one(arm: str, seed: int, speedup: float, out: Path) -> dict:
    """One `optimize example` run of `arm`; its exit status, wall time and what its report says."""
    run_dir = out / "runs" / f"{arm}_seed{seed}"
    args = ["optimize", "example", "--device", "cpu", "--speedup", str(speedup), "--seed", str(seed),
            "--out", str(run_dir), "--store", str(out / f"store_{arm}_{seed}.sqlite"), "--no-progress"]
    t0 = time.perf_counter()
    with open(out / f"log_{arm}_seed{seed}.txt", "w") as log:
        rc = subprocess.run([sys.executable, "-c", _LAUNCH, arm, *args], stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO).returncode
    row = {"arm": arm, "seed": seed, "exit": rc, "wall_s": round(time.perf_counter() - t0, 1),
           "dir": str(run_dir)}
    report = run_dir / "report.json"
    if report.is_file():
        res = json.loads(report.read_text())["result"]
        row.update(status=res.get("status"), claimed=res.get("speedup"),
                   set_aside=len((res.get("comparison") or {}).get("set_aside") or []))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--speedup", type=float, default=2.0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(a.pairs):
        order = ("quiet", "plain") if i % 2 == 0 else ("plain", "quiet")
        for arm in order:
            rows.append(run_one(arm, i, a.speedup, a.out))
            print(json.dumps(rows[-1]), flush=True)
    from locp_trt.deploy.delivered import reproduce

    for row in rows:  # after every run, so the re-measures do not share the machine with a run
        if row.get("claimed") is not None:
            rep = reproduce(row["dir"])
            row.update(delivered=round(rep.comparison.speedup, 4), delivered_low=round(rep.comparison.low, 4),
                       delivered_high=round(rep.comparison.high, 4), reproduced=rep.reproduced)
        row["landed"] = row.get("delivered") is not None and a.speedup <= row["delivered"] <= a.speedup * BAND
    (a.out / "results.json").write_text(json.dumps({"command": sys.argv, "speedup": a.speedup,
                                                    "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                                                    "runs": rows}, indent=1) + "\n")
    print("| arm | seed | exit | status | claimed | set aside | delivered (90% CI) | landed | wall |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        d = "-" if r.get("delivered") is None else f"{r['delivered']:.3f}x ({r['delivered_low']:.3f}-{r['delivered_high']:.3f})"
        c = "-" if r.get("claimed") is None else f"{r['claimed']:.3f}x"
        print(f"| {r['arm']} | {r['seed']} | {r['exit']} | {r.get('status', '-')} | {c} | {r.get('set_aside', '-')} | "
              f"{d} | {'yes' if r['landed'] else 'no'} | {r['wall_s']:.0f} s |")
    for arm in ("quiet", "plain"):
        mine = [r for r in rows if r["arm"] == arm]
        print(f"{arm}: {sum(r['landed'] for r in mine)} of {len(mine)} landed (delivered), "
              f"{sum(r.get('status') == 'landed' for r in mine)} said landed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
