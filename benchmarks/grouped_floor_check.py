"""Grouped convs on torchvision's RegNetX-400MF and ResNeXt-50 (issue 17, class 3): how many channel
groups are prunable (and how many of those a grouped conv splits into conv groups), the FLOPs at
every group's floor, and whether the floor plan applies, keeps the output and matches PyTorch in
ONNX Runtime. Random weights, nothing timed; about a minute on a 2-core CPU.

    python benchmarks/grouped_floor_check.py [--size 64] [--models regnet_x_400mf resnext50_32x4d]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def check(name: str, size: int, min_width_ratio: float) -> dict:
    import torchvision

    from locp_trt.deploy.export import export_onnx
    from locp_trt.prune import PruningPlan, apply_plan
    from locp_trt.prune.graph import build_graph, group_floor

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    shape = (3, size, size)
    t0 = time.perf_counter()
    graph = build_graph(model, shape)
    grouped = [g for g in graph.prunable() if g.blocks > 1]
    floors = {g.id: group_floor(g, min_width_ratio) for g in graph.prunable()}
    pruned, _ = apply_plan(model, PruningPlan(None, shape, floors), shape)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        same_shape = pruned(x).shape == model(x).shape
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(pruned, Path(tmp) / "m.onnx", (2, *shape), "fp32")
    return {"model": name, "groups": len(graph.groups), "prunable": len(graph.prunable()),
            "grouped_prunable": len(grouped), "fixed": [f"{g.id}: {g.reason}" for g in graph.unprunable()],
            "flops": graph.flops(), "flops_at_floor": graph.flops(floors), "output_shape_kept": same_shape,
            "onnx_matches": bool(onnx.verified), "onnx_max_abs_diff": onnx.max_abs_diff,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64, help="input height and width")
    p.add_argument("--min-width-ratio", type=float, default=0.1)
    p.add_argument("--models", nargs="+", default=["regnet_x_400mf", "resnext50_32x4d"])
    args = p.parse_args(argv)
    ok = True
    for name in args.models:
        r = check(name, args.size, args.min_width_ratio)
        ok &= r["output_shape_kept"] and r["onnx_matches"]
        print(r)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
