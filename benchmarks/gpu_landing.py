"""ResNet-50 to a speedup on a GPU runtime, several seeds, each checked independently afterwards.

For each seed: torchvision ResNet-50 with random weights (`torch.manual_seed(seed)`), then
`python -m locp_trt optimize` (fp16, batch 32, 224x224, an empty latency store of its own), then
`python -m locp_trt bench OUT/` in a fresh process: the emitted files rebuilt with the run's
recorded settings and timed interleaved with the unpruned model over 3 fresh builds of each
(`delivered_seed<N>.json`, key `speedup`). One summary row per seed goes to `seed<N>.json`;
`--table` gathers the rows of a results folder into results.md.

A list of speedups (`--speedup 1.5,2,2.2`) runs one family (issue 19): one `optimize` call writes
OUT/<t>x/ per member, and each member folder is checked by its own `bench` in a fresh process
(`delivered_seed<N>_<t>x.json`); the row then lists the members (`family.json` is copied too).

  python benchmarks/gpu_landing.py --runtime onnxruntime-cuda --seeds 0 1 --work /tmp/g15 --out OUT
  python benchmarks/gpu_landing.py --runtime torch --speedup 1.5,2,2.2 --seeds 0 --work /tmp/gf --out OUT
  python benchmarks/gpu_landing.py --table benchmarks/results/gpu_h200_ortcuda_resnet50_landing
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BAND = 1.10  # a run lands when target <= independent speedup <= BAND x target


def _weights(arch: str, seed: int, path: Path) -> None:
    import torch

    from locp_trt.models.arch import resolve_arch

    torch.manual_seed(seed)
    torch.save(resolve_arch(arch)[0]().state_dict(), path)


def _run(cmd: list[str], log: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
        f.write(f"exit {rc}\n")
    return rc, time.perf_counter() - t0


def _label(t: str) -> str:
    """The member folder's name for a speedup as typed ('2' and '2.0' -> '2x', '1.5' -> '1.5x')."""
    return f"{float(t):g}x"


def _member(out: Path, res: Path, tag: str, log: Path) -> dict[str, Any]:
    """Summary of one output folder (a single run or a family member) and its independent check."""
    row: dict[str, Any] = {}
    report_path = out / "report.json"
    if not report_path.is_file():
        return {"status": "no report.json"}
    rep = json.loads(report_path.read_text())
    r = rep["result"]
    m = rep.get("measurements", {})
    row.update({"status": r.get("status"), "speedup": r["speedup"], "low": r.get("speedup_low"),
                "high": r.get("speedup_high"), "final_check": r.get("comparison"),
                "loop_s": rep.get("timings", {}).get("loop_s"),
                "configs_measured": m.get("measured"), "measure_s": m.get("measure_s"),
                "seconds_per_config": m.get("seconds_per_config"),
                "latency_model": r.get("latency_model"), "steps": len(rep["history"]) - 1,
                "runtime_label": rep.get("runtime"), "fingerprint": rep.get("fingerprint")})
    (res / f"report_{tag}.json").write_text(json.dumps(
        {k: rep[k] for k in ("history", "result", "measurements", "timings", "fingerprint", "runtime",
                             "config", "command") if k in rep}, indent=1))
    delivered = res / f"delivered_{tag}.json"
    rc2, wall2 = _run([sys.executable, "-m", "locp_trt", "bench", str(out), "--builds", "3",
                       "--json", str(delivered)], log)
    row["check_exit"], row["check_wall_s"] = rc2, round(wall2, 1)
    if delivered.is_file():
        d = json.loads(delivered.read_text())
        row.update({"delivered": d["speedup"], "delivered_low": d["speedup_low"],
                    "delivered_high": d["speedup_high"], "delivered_build_spread": d.get("build_spread"),
                    "reproduced": d.get("reproduced")})
    return row


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    weights, out, store = work / f"r50_s{seed}.pt", work / f"run_s{seed}", work / f"store_s{seed}.sqlite"
    log = Path(args.out) / f"log_seed{seed}.txt"
    _weights(args.arch, seed, weights)
    store.unlink(missing_ok=True)
    rc, wall = _run([sys.executable, "-m", "locp_trt", "optimize", str(weights), "--arch",
                     args.arch, "--input-shape", args.input_shape, "--device", args.device,
                     "--runtime", args.runtime, "--precision", args.precision, "--batch", str(args.batch),
                     "--speedup",
                     str(args.speedup), "--seed", str(seed), "--out", str(out), "--store", str(store),
                     "--no-progress", "--no-engine", "--force"], log)
    row: dict[str, Any] = {"seed": seed, "runtime": args.runtime, "target": args.speedup,
                           "exit": rc, "wall_s": round(wall, 1)}
    targets = [t for t in str(args.speedup).split(",") if t.strip()]
    if len(targets) == 1:
        row.update(_member(out, Path(args.out), f"seed{seed}", log))
        row["target"] = float(targets[0])
    else:  # a family: one folder per member, each checked on its own
        fam = out / "family.json"
        if fam.is_file():
            (Path(args.out) / f"family_seed{seed}.json").write_text(fam.read_text())
        row["members"] = [{"target": float(t), **_member(out / _label(t), Path(args.out),
                                                          f"seed{seed}_{_label(t)}", log)}
                          for t in targets]
    (Path(args.out) / f"seed{seed}.json").write_text(json.dumps(row, indent=1))
    return row


def table(folder: Path) -> str:
    """results.md rows from the seed*.json files of a results folder."""
    rows = []
    for p in sorted(folder.glob("seed*.json")):
        r = json.loads(p.read_text())
        # a family's members are rows of their own, under the family's exit code
        rows += [{**r, **m, "members": None} for m in r["members"]] if r.get("members") else [r]
    lines = ["| runtime | seed | target | exit | status | final check (90% CI) | independent, 3 builds (90% CI) | "
             "in band | loop s | configs | s/config | max prediction error |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        t = float(r["target"])
        d = r.get("delivered")
        inside = d is not None and t <= d <= BAND * t
        lm = r.get("latency_model") or {}
        lines.append(
            f"| {r['runtime']} | {r['seed']} | {t:g}x | {r['exit']} | {r.get('status', '-')} | "
            f"{r.get('speedup', float('nan')):.3f}x ({r.get('low') or 0:.3f}-{r.get('high') or 0:.3f}) | "
            + (f"{d:.3f}x ({r['delivered_low']:.3f}-{r['delivered_high']:.3f})" if d is not None else "-")
            + f" | {'yes' if inside else 'NO'} | {r.get('loop_s', '-')} | {r.get('configs_measured', '-')} | "
            f"{r.get('seconds_per_config') or float('nan'):.3f} | "
            f"{lm.get('max_abs_error') if lm.get('max_abs_error') is not None else '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime", default="onnxruntime-cuda")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--speedup", default="2", help="a speedup, or a list (1.5,2,2.2) for one family")
    p.add_argument("--arch", default="torchvision.models:resnet50")
    p.add_argument("--input-shape", default="3,224,224")
    p.add_argument("--precision", default="fp16")
    p.add_argument("--device", default="desktop", help="optimize's --device (cpu: a dry run here)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--work", default="/tmp/gpu_landing")
    p.add_argument("--out", default=".")
    p.add_argument("--table", type=Path, help="print results.md for a results folder and stop")
    a = p.parse_args(argv)
    if a.table is not None:
        print(table(a.table))
        return 0
    Path(a.out).mkdir(parents=True, exist_ok=True)
    for seed in a.seeds:
        row = one_seed(seed, a)
        print(json.dumps({k: row.get(k) for k in ("seed", "exit", "wall_s", "status", "speedup", "delivered",
                                                  "loop_s", "seconds_per_config", "members")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
