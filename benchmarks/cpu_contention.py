"""Does a busy neighbour change a measured speedup? ONNX Runtime CPU (1 thread): the unpruned
ResNet-56 (1x28x28) and pruned copies of it, timed interleaved over fresh build pairs
(`latency.compare.compare_builds`, nothing set aside) on one core, while 0..N neighbour processes
keep other cores busy.

Why (issue 16): on the H200 host the build pairs of one comparison fell into two states lasting
many seconds, the speedup 20-25% apart between them, with the timing workers pinned to cores of
their own. If neighbours sharing the cache and memory (other timing workers, trainers) cause it,
the speedup moves with their number here, and the accuracy benchmark must time with fewer of them.

    python benchmarks/cpu_contention.py --neighbours 0 1 --kinds ort membw --out DIR

A neighbour is `ort` (the unpruned model run in a loop, as another timing worker) or `membw`
(numpy copies of a 64 MB array, memory traffic alone). Writes DIR/contention.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `locp_trt` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = (1, 28, 28)
#: Pruned copies: every group keeps (1 - removed) of its width (`methods.uniform_widths`): 0.5 keeps
#: multiples of 8 on ResNet-56 (16/32/64 -> 8/16/32), 0.45 odd widths (9/18/35).
VARIANTS = {"uniform_0.50": 0.50, "uniform_0.45": 0.45}


def _models():
    import torch

    from benchmarks.methods import Method, knob_model, make_subject
    from locp_trt.models import get_model

    torch.manual_seed(0)
    base = get_model("resnet56", in_channels=1).eval()
    subject = make_subject("resnet56", base, SHAPE)
    make, _ = knob_model(subject, Method.UNIFORM_L1)
    return base, {name: make(k) for name, k in VARIANTS.items()}


def _neighbour(kind: str, cpu: int | None, stop) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if kind == "membw":
        import numpy as np

        src = np.ones(8 * 1024 * 1024)  # 64 MB, far beyond any cache
        dst = np.empty_like(src)
        while not stop.is_set():
            np.copyto(dst, src)
        return
    from benchmarks.measure import make_runtimes
    from locp_trt.latency.config import Precision
    from locp_trt.models import get_model

    sample = make_runtimes("onnxruntime", threads=1).model.prepare_module(
        get_model("resnet56", in_channels=1).eval(), (1, *SHAPE), Precision.FP32)
    while not stop.is_set():
        sample(0, 20)


def _cpus() -> tuple[int | None, list[int | None]]:
    """The measuring core and the neighbours' cores (None: unpinned, one CPU only)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return None, []
    return cpus[-1], cpus[:-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--neighbours", nargs="+", type=int, default=[0, 1])
    p.add_argument("--kinds", nargs="+", choices=["ort", "membw"], default=["ort", "membw"])
    p.add_argument("--builds", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2, help="passes over every setting, interleaved")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)

    from benchmarks.measure import make_runtimes
    from locp_trt.latency.compare import CompareRule, compare_builds
    from locp_trt.latency.config import Precision

    me, others = _cpus()
    if me is not None:
        os.sched_setaffinity(0, {me})
    rt = make_runtimes("onnxruntime", threads=1).model
    base, variants = _models()
    rule = CompareRule(builds=a.builds, max_builds=a.builds)
    make = {n: (lambda m=m: rt.prepare_module(m, (1, *SHAPE), Precision.FP32)) for n, m in
            {"unpruned": base, **variants}.items()}
    ctx = mp.get_context("spawn")
    settings = [(0, "none")] + [(n, k) for k in a.kinds for n in a.neighbours if n > 0]
    rows = []
    for rep in range(a.repeats):
        for n, kind in settings:
            stop = ctx.Event()
            cores = [others[i % len(others)] if others else None for i in range(n)]
            procs = [ctx.Process(target=_neighbour, args=(kind, c, stop), daemon=True) for c in cores]
            for proc in procs:
                proc.start()
            time.sleep(3.0 if n else 0.0)  # the neighbours built and running
            for name in variants:
                t0 = time.perf_counter()
                cmp = compare_builds(make["unpruned"], make[name], rule)
                row = {"repeat": rep, "neighbours": n, "kind": kind, "variant": name,
                       "speedup": round(cmp.speedup, 4), "low": round(cmp.low, 4), "high": round(cmp.high, 4),
                       "a_us": round(cmp.a_us, 1), "b_us": round(cmp.b_us, 1),
                       "builds": [b.to_json() for b in cmp.builds], "s": round(time.perf_counter() - t0, 1)}
                rows.append(row)
                print(f"rep {rep} {n} x {kind:5s} {name}: {row['speedup']:.3f}x ({row['low']:.3f}-"
                      f"{row['high']:.3f}), unpruned {row['a_us']:.0f} µs, pruned {row['b_us']:.0f} µs", flush=True)
            stop.set()
            for proc in procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "contention.json").write_text(json.dumps(
        {"command": sys.argv, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.node(),
         "measuring_cpu": me, "neighbour_cpus": others, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
