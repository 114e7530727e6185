"""ORT CPU: whole-model comparisons in the measuring process and in a child process (model_host),
before and after the measuring process has timed N one-layer graphs, as the loop's process has.

    python benchmarks/cpu_process_state.py OPTIMIZE_OUT_DIR 3000
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from locp_trt.deploy.delivered import _reference_module, read_runtime_file
from locp_trt.latency import LayerConfig, Op, Precision
from locp_trt.latency.compare import CompareRule, compare_builds
from locp_trt.latency.runtimes.onnxrt import OrtCpuRuntime


def main(out: Path, n_layers: int) -> None:
    info = read_runtime_file(out)
    shape = tuple(info["input_shape"])
    precision = Precision.parse(info["precision"])
    reference = _reference_module(info, None)
    candidate = (out / "model.onnx").read_bytes()
    rule = CompareRule(max_rounds=12, builds=3, max_builds=3)
    runtimes = {"in": OrtCpuRuntime(isolate=False), "host": OrtCpuRuntime(isolate=True)}
    makers = {k: (rt.builder(reference, shape, precision), rt.onnx_builder(candidate, shape, precision))
              for k, rt in runtimes.items()}

    def alternate(tag: str) -> None:
        for where in ("in", "host", "in", "host"):
            c = compare_builds(*makers[where], rule, builds=3)
            print(tag, where, round(c.speedup, 4), round(c.low, 4), round(c.high, 4), flush=True)

    alternate("clean")
    rng = random.Random(0)
    t0 = time.time()
    for _ in range(n_layers):
        hw = rng.choice([8, 16, 32])
        runtimes["in"].time_layer(LayerConfig(Op.CONV, rng.randint(4, 64), rng.randint(4, 64), kernel=3,
                                              padding=1, input_hw=(hw, hw)))
    print("layers", n_layers, round(time.time() - t0, 1), flush=True)
    alternate("after")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
