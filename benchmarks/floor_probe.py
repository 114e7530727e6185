"""Why is a model's width floor slower than the unpruned model? (issue 17: ConvNeXt-Tiny's floor
ran at 0.836x under torch-CUDA fp16 while its layer sum predicted 3.27x.)

For each model: the unpruned model and width variants built with the package's own graph and
`apply_plan` (every prunable group at --min-width-ratio of its width; the same rounded up to a
multiple of 8; only the groups read by a depthwise conv at the floor; only the others), each timed
end to end the way the torch runtime times a model (fp16, channels-last, cudnn benchmark, one
CUDA graph replayed; medians of interleaved rounds), then the top CUDA kernels of the unpruned and
the floor model from torch.profiler (eager). On a CPU machine it runs fp32 eagerly (a dry run).

    python benchmarks/floor_probe.py --models convnext_tiny,regnet_x_400mf --out OUT
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import torch  # noqa: E402

from benchmarks.imagenet_table import build_model  # noqa: E402
from locp_trt.latency.config import Precision  # noqa: E402
from locp_trt.prune.graph import build_graph, group_floor  # noqa: E402
from locp_trt.prune.plan import PruningPlan, apply_plan  # noqa: E402


def _round_up(w: int, m: int, cap: int) -> int:
    return min(cap, max(m, -(-w // m) * m))


def variants(model: torch.nn.Module, shape: tuple[int, ...], ratio: float) -> dict[str, dict[str, int]]:
    """Named width maps (group id -> width) for the probe."""
    graph = build_graph(model, shape, batch=1, precision=Precision.FP32)
    groups = {g: grp for g, grp in graph.groups.items() if grp.prunable}
    floor = {g: group_floor(grp, ratio) for g, grp in groups.items()}
    dw = {g for g, grp in groups.items() if any(m.endswith(":dw") for m in grp.members)}
    out = {
        "floor": floor,
        "floor_round8": {g: _round_up(w, 8 * groups[g].blocks if groups[g].blocks > 1 else 8, groups[g].width)
                         for g, w in floor.items()},
        "floor_dw_groups_only": {g: w for g, w in floor.items() if g in dw},
        "floor_other_groups_only": {g: w for g, w in floor.items() if g not in dw},
        "half": {g: max(groups[g].blocks, (groups[g].width // 2) // groups[g].blocks * groups[g].blocks)
                 for g in groups},
        "half_minus_1": {g: max(1, groups[g].width // 2 - 1) for g in groups if groups[g].blocks == 1},
    }
    print(f"  {len(groups)} prunable groups ({len(dw)} read by a depthwise conv); floor widths: "
          + ", ".join(f"{g}={w}" for g, w in list(floor.items())[:12]) + (" ..." if len(floor) > 12 else ""),
          flush=True)
    return {k: v for k, v in out.items() if v}


def timer(model: torch.nn.Module, shape: tuple[int, ...], batch: int, cuda: bool):
    """A callable that runs the model once (a CUDA graph replay on the GPU) and returns seconds."""
    model = model.eval()
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.half().cuda().to(memory_format=torch.channels_last)
        x = torch.randn(batch, *shape, device="cuda").half().contiguous(memory_format=torch.channels_last)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(s):
            for _ in range(5):
                model(x)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(g):
            model(x)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def run(n: int = 20) -> float:
            start.record()
            for _ in range(n):
                g.replay()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000 / n
        return run, (model, x)
    x = torch.randn(batch, *shape)

    def run_cpu(n: int = 3) -> float:
        t = time.perf_counter()
        with torch.no_grad():
            for _ in range(n):
                model(x)
        return (time.perf_counter() - t) / n
    return run_cpu, (model, x)


def top_kernels(model: torch.nn.Module, x: torch.Tensor, cuda: bool, n: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.no_grad():
        for _ in range(3):
            model(x)
        if cuda:
            torch.cuda.synchronize()
        with profile(activities=acts) as prof:
            for _ in range(5):
                model(x)
            if cuda:
                torch.cuda.synchronize()
    key = "device_time_total" if cuda else "self_cpu_time_total"
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True):
        if cuda and getattr(e, "device_time_total", 0) == 0:
            continue
        rows.append({"name": e.key[:110], "us_per_run": round(getattr(e, key) / 5, 1), "calls_per_run": e.count / 5})
        if len(rows) == n:
            break
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="convnext_tiny")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--min-width-ratio", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    a.out.mkdir(parents=True, exist_ok=True)
    result = {"cuda": cuda, "device": torch.cuda.get_device_name() if cuda else "cpu",
              "torch": torch.__version__, "batch": a.batch, "input_size": a.input_size,
              "precision": "fp16 channels-last CUDA graph" if cuda else "fp32 eager", "models": {}}
    for name in a.models.split(","):
        print(f"{name}:", flush=True)
        model = build_model(name, 0).eval()
        shape = (3, a.input_size, a.input_size)
        built = {"unpruned": model}
        for vname, widths in variants(model, shape, a.min_width_ratio).items():
            built[vname], _ = apply_plan(model, PruningPlan(name, shape, widths), shape)
        runs = {k: timer(m, shape, a.batch, cuda) for k, m in built.items()}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(a.rounds):  # interleaved, order alternating
            for k in (list(runs) if r % 2 == 0 else list(reversed(runs))):
                times[k].append(runs[k][0]())
        base = statistics.median(times["unpruned"])
        rows = {}
        for k, ts in times.items():
            med = statistics.median(ts)
            params = sum(t.numel() for t in built[k].parameters())
            rows[k] = {"median_us": round(med * 1e6, 1), "speedup": round(base / med, 3), "params": params}
            print(f"  {k:26s} {med * 1e6:10.1f} us  {base / med:6.3f}x  params {params:,}", flush=True)
        kern = {k: top_kernels(*runs[k][1], cuda) for k in ("unpruned", "floor") if k in runs}
        for k, ks in kern.items():
            print(f"  top kernels, {k}:", flush=True)
            for row in ks:
                print(f"    {row['us_per_run']:9.1f} us  x{row['calls_per_run']:<5g} {row['name']}", flush=True)
        result["models"][name] = {"variants": rows, "top_kernels": kern}
        del runs, built
        if cuda:
            torch.cuda.empty_cache()
    (a.out / "floor_probe.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
