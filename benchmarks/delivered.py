"""What an optimize run delivered, measured independently: the unpruned and the emitted model
timed interleaved in this process over 3+ fresh builds of each (`latency.compare.compare_builds`),
on any runtime. `python -m locp_trt bench OUT/` does the same from an output folder's runtime.json.

  python benchmarks/delivered.py model.pt --arch resnet56 runs/r56/pruned.pt --runtime onnxruntime
  python benchmarks/delivered.py r50.pt --arch torchvision.models:resnet50 --input-shape 3,224,224 \\
      runs/r50/pruned.pt --runtime torch --precision fp16 --batch 32 --json delivered.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from locp_trt.latency.compare import CompareRule, compare_builds
from locp_trt.latency.config import Precision


def delivered_speedup(base: str | Path, pruned: str | Path, *, arch: str | None = None,
                      input_shape: tuple[int, ...] | None = None, runtime: str = "onnxruntime",
                      precision: str = "fp32", batch: int = 1, max_rounds: int = 12) -> dict[str, Any]:
    """`Comparison.summary()` of the pruned model over the unpruned one, plus the runtime label."""
    from locp_trt.latency.runtimes import get_runtime
    from locp_trt.prune.loading import load_model
    from locp_trt.prune.plan import load_pruned

    loaded = load_model(base, arch=arch, input_shape=input_shape)
    model, _ = load_pruned(pruned)
    shape = (int(batch), *loaded.input_shape)
    prec = Precision.parse(precision)
    with get_runtime(runtime) as rt:
        # 3+ fresh builds of each model, as optimize's final check and `bench OUT/` judge
        a = rt.builder(loaded.module.eval(), shape, prec)
        b = rt.builder(model.eval(), shape, prec)
        result = compare_builds(a, b, CompareRule(max_rounds=max_rounds)).summary()
        result["runtime"] = rt.label
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", help="the unpruned model.pt (or 'example')")
    p.add_argument("pruned", help="pruned.pt written by optimize")
    p.add_argument("--arch")
    p.add_argument("--input-shape", type=lambda t: tuple(int(v) for v in t.split(",")))
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--max-rounds", type=int, default=12)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    d = delivered_speedup(a.base, a.pruned, arch=a.arch, input_shape=a.input_shape, runtime=a.runtime,
                          precision=a.precision, batch=a.batch, max_rounds=a.max_rounds)
    print(json.dumps(d, indent=1))
    if a.json:
        a.json.write_text(json.dumps(d, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
