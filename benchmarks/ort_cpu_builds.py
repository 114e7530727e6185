"""Which ONNX Runtime CPU session settings make fresh builds of one model agree (issue 15).

A fresh session of the same file can run at another speed (benchmarks/results/cpu_repeatability:
build-to-build sd about 5%). For each settings variant, B fresh build pairs of the reference and
the candidate are timed interleaved (`latency.compare.compare_builds`, 3 rounds per pair), in this
process, one variant after another and then again in reverse order; printed per variant: the
per-build speedups, their sd, the candidate's per-build medians and their spread, and the speed.

  python benchmarks/ort_cpu_builds.py REF.onnx CAND.onnx --shape 1,3,32,32 --builds 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS: dict[str, dict] = {
    "default": {},
    "no_arena": {"enable_cpu_mem_arena": False},
    "no_mem_pattern": {"enable_mem_pattern": False},
    "extended_opt": {"graph_optimization_level": "ORT_ENABLE_EXTENDED"},
    "basic_opt": {"graph_optimization_level": "ORT_ENABLE_BASIC"},
    "no_spinning": {"config": {"session.intra_op.allow_spinning": "0"}},
}


def _session_factory(onnx_bytes: bytes, shape: tuple[int, ...], variant: dict):
    import onnxruntime as ort

    def build():
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              variant.get("graph_optimization_level", "ORT_ENABLE_ALL"))
        for key in ("enable_cpu_mem_arena", "enable_mem_pattern"):
            if key in variant:
                setattr(so, key, variant[key])
        for k, v in variant.get("config", {}).items():
            so.add_session_config_entry(k, v)
        sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        feed = {name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
        outs = [o.name for o in sess.get_outputs()]

        def sample(warmup: int, iters: int) -> list[float]:
            for _ in range(warmup):
                sess.run(outs, feed)
            res = []
            for _ in range(iters):
                t0 = time.perf_counter_ns()
                sess.run(outs, feed)
                res.append((time.perf_counter_ns() - t0) / 1e3)
            return res
        return sample
    return build


def main(argv: list[str] | None = None) -> int:
    from locp_trt.latency.compare import CompareRule, compare_builds

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", type=Path)
    p.add_argument("cand", type=Path)
    p.add_argument("--shape", default="1,3,32,32")
    p.add_argument("--builds", type=int, default=10)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    shape = tuple(int(v) for v in a.shape.split(","))
    ref, cand = a.ref.read_bytes(), a.cand.read_bytes()
    names = a.variants.split(",")
    rule = CompareRule(builds=a.builds, max_builds=a.builds)
    rows: dict[str, list] = {n: [] for n in names}
    for order in (names, names[::-1]):  # forwards, then backwards: a slow drift hits all alike
        for n in order:
            cmp = compare_builds(_session_factory(ref, shape, VARIANTS[n]), _session_factory(cand, shape, VARIANTS[n]),
                                 rule, builds=a.builds)
            rows[n] += [b.to_json() for b in cmp.builds]
    out = {"command": "python benchmarks/ort_cpu_builds.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "variants": {}}
    print(f"{'variant':16s} {'speedup':>8s} {'sd %':>6s} {'cand spread %':>14s} {'cand us':>8s} {'ref us':>8s}")
    for n in names:
        sp = [b["speedup"] for b in rows[n]]
        logs = [math.log(s) for s in sp]
        bs = [b["b_us"] for b in rows[n]]
        v = {"builds": rows[n], "speedup": math.exp(statistics.mean(logs)),
             "sd_pct": 100 * statistics.stdev(logs), "cand_spread_pct": 100 * (max(bs) / min(bs) - 1),
             "cand_median_us": statistics.median(bs), "ref_median_us": statistics.median(b["a_us"] for b in rows[n])}
        out["variants"][n] = v
        print(f"{n:16s} {v['speedup']:8.3f} {v['sd_pct']:6.1f} {v['cand_spread_pct']:14.1f} "
              f"{v['cand_median_us']:8.1f} {v['ref_median_us']:8.1f}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
