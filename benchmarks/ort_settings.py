"""Which ONNX Runtime CUDA options to build sessions with: speed and build-to-build spread.

For each ONNX file and each option set (cudnn_conv_algo_search EXHAUSTIVE or HEURISTIC, NCHW or
prefer_nhwc), `--sessions` fresh sessions are built; each runs 10 warm-ups, then the median of
`--runs` timed runs (IO binding, the project's `onnxruntime-cuda` runtime) is its figure. Then
the cost of one layer config (one-layer graph: build, session, first run, timing) under each
algorithm search, over the first `--configs` distinct conv configs of ResNet-50 at batch 32.

  python benchmarks/ort_settings.py base.onnx pruned.onnx --json ort_settings.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

OPTION_SETS = {
    "exhaustive_nchw": {"cudnn_conv_algo_search": "EXHAUSTIVE", "prefer_nhwc": "0", "enable_cuda_graph": "0"},
    "exhaustive_nhwc": {"cudnn_conv_algo_search": "EXHAUSTIVE", "prefer_nhwc": "1", "enable_cuda_graph": "0"},
    "heuristic_nchw": {"cudnn_conv_algo_search": "HEURISTIC", "prefer_nhwc": "0", "enable_cuda_graph": "0"},
    "heuristic_nhwc": {"cudnn_conv_algo_search": "HEURISTIC", "prefer_nhwc": "1", "enable_cuda_graph": "0"},
    "heuristic_nchw_graph": {"cudnn_conv_algo_search": "HEURISTIC", "prefer_nhwc": "0", "enable_cuda_graph": "1"},
    "heuristic_nhwc_graph": {"cudnn_conv_algo_search": "HEURISTIC", "prefer_nhwc": "1", "enable_cuda_graph": "1"},
    "exhaustive_nhwc_graph": {"cudnn_conv_algo_search": "EXHAUSTIVE", "prefer_nhwc": "1", "enable_cuda_graph": "1"},
}


def models_from_report(report: Path, steps: list[int], folder: Path) -> list[Path]:
    """The unpruned torchvision ResNet-50 and its pruned shapes at `steps` of an optimize
    report's history (widths only: latency does not depend on the weights), as fp16 ONNX at
    batch 32, 224x224."""
    import torchvision

    from locp_trt.deploy.export import export_onnx
    from locp_trt.prune.plan import PruningPlan, apply_plan

    history = json.loads(report.read_text())["history"]
    paths = [folder / "r50_base.onnx"]
    export_onnx(torchvision.models.resnet50().eval(), paths[0], (32, 3, 224, 224), "fp16", verify=False)
    for step in steps:
        widths = {k: v for k, v in history[step]["widths"].items() if k != "fc"}
        plan = PruningPlan(arch=None, input_shape=(3, 224, 224), widths=widths)
        pruned, _ = apply_plan(torchvision.models.resnet50().eval(), plan, (3, 224, 224))
        paths.append(folder / f"r50_step{step}.onnx")
        export_onnx(pruned, paths[-1], (32, 3, 224, 224), "fp16", verify=False)
    return paths


def sessions(path: Path, options: dict, n: int, runs: int) -> list[float]:
    from locp_trt.latency.runtimes.onnxrt import OrtCudaRuntime

    data = path.read_bytes()
    rt = OrtCudaRuntime(provider_options=options, isolate=False)
    import onnx

    m = onnx.load_from_string(data)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(int(d.dim_value) for d in dims)
    prec = "fp16" if m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else "fp32"
    build = rt.onnx_builder(data, shape, prec)
    return [float(np.median(build()(10, runs))) for _ in range(n)]


def cost_breakdown(options: dict, count: int) -> dict:
    """Seconds per layer config split into: one-layer graph, session build, first run (cuDNN
    algorithm choice / plan build), 60 timed runs; medians over `count` ResNet-50 configs."""
    import torchvision

    from locp_trt.latency.onnx_graph import build_layer_onnx
    from locp_trt.latency.runtimes.onnxrt import OrtCudaRuntime
    from locp_trt.prune.graph import build_graph

    g = build_graph(torchvision.models.resnet50().eval(), (3, 224, 224), batch=32, precision="fp16")
    cfgs = list(dict.fromkeys(g.layer_configs({}).values()))[:count]
    rt = OrtCudaRuntime(provider_options=options)
    parts: dict[str, list[float]] = {"graph": [], "session": [], "first_run": [], "timed_60": []}
    for c in cfgs:
        t0 = time.perf_counter()
        data = build_layer_onnx(c)
        t1 = time.perf_counter()
        build = rt.onnx_builder(data, c.input_shape, c.precision)
        sample = build()
        t2 = time.perf_counter()
        sample(1, 1)
        t3 = time.perf_counter()
        sample(10, 50)
        t4 = time.perf_counter()
        for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[k].append(v)
    return {k: round(float(np.median(v)), 4) for k, v in parts.items()}


def aligned_widths(options: dict, n: int, runs: int) -> dict:
    """Fresh-session spread of ResNet-50 variants whose widths are multiples of 8 (64, 56 per
    group) or of 4 (60) or odd (61): is the build-to-build variance an alignment effect?"""
    import torchvision

    from locp_trt.deploy.export import onnx_bytes_from_module
    from locp_trt.latency.runtimes.onnxrt import OrtCudaRuntime

    rt = OrtCudaRuntime(provider_options=options)
    out = {}
    for wpg in (64, 56, 60, 61):
        m = torchvision.models.resnet50(width_per_group=wpg).eval()
        build = rt.onnx_builder(onnx_bytes_from_module(m, (32, 3, 224, 224), "fp16"), (32, 3, 224, 224), "fp16")
        meds = [float(np.median(build()(10, runs))) for _ in range(n)]
        out[f"width_per_group_{wpg}"] = {"session_medians_us": [round(v, 1) for v in meds],
                                         "spread": round(max(meds) / min(meds) - 1, 4)}
        print("aligned", wpg, out[f"width_per_group_{wpg}"], flush=True)
    return out


def config_cost(options: dict, count: int) -> dict:
    """Seconds per layer config through the runtime's own time_layer, and the session share."""
    import torchvision

    from locp_trt.latency.onnx_graph import build_layer_onnx
    from locp_trt.latency.runtimes.onnxrt import OrtCudaRuntime
    from locp_trt.prune.graph import build_graph

    g = build_graph(torchvision.models.resnet50().eval(), (3, 224, 224), batch=32, precision="fp16")
    cfgs = list(dict.fromkeys(g.layer_configs({}).values()))[:count]
    rt = OrtCudaRuntime(provider_options=options)
    t0 = time.perf_counter()
    for c in cfgs:
        rt.time_layer(c)
    per = (time.perf_counter() - t0) / len(cfgs)
    t0 = time.perf_counter()
    for c in cfgs:
        rt._session(build_layer_onnx(c))
    sess = (time.perf_counter() - t0) / len(cfgs)
    return {"configs": len(cfgs), "seconds_per_config": round(per, 4),
            "seconds_per_session_build": round(sess, 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", nargs="*", type=Path)
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--configs", type=int, default=40)
    p.add_argument("--json", type=Path)
    p.add_argument("--report", type=Path, help="instead of ONNX files: build ResNet-50 and its "
                   "pruned shapes from this optimize report.json (needs torchvision)")
    p.add_argument("--steps", default="1", help="with --report: history steps to build")
    p.add_argument("--sets", help="comma-separated option sets (default: the four without graphs)")
    p.add_argument("--no-config-cost", action="store_true")
    p.add_argument("--experiments", action="store_true",
                   help="instead: the per-config cost breakdown and the alignment spread test")
    a = p.parse_args(argv)
    if a.experiments:
        out = {"breakdown": {}, "aligned": {}}
        for name in ("heuristic_nhwc", "heuristic_nchw"):
            out["breakdown"][name] = cost_breakdown(OPTION_SETS[name], a.configs)
            print("breakdown", name, out["breakdown"][name], flush=True)
        for name in ("heuristic_nhwc", "heuristic_nchw"):
            out["aligned"][name] = aligned_widths(OPTION_SETS[name], a.sessions, a.runs)
        if a.json:
            a.json.write_text(json.dumps(out, indent=1))
        return 0
    out: dict = {"models": {}, "config_cost": {}}
    paths = list(a.onnx)
    if a.report is not None:
        import tempfile

        paths = models_from_report(a.report, [int(v) for v in a.steps.split(",")],
                                   Path(tempfile.mkdtemp(prefix="locp_ort_")))
    names = a.sets.split(",") if a.sets else ["exhaustive_nchw", "exhaustive_nhwc", "heuristic_nchw",
                                              "heuristic_nhwc"]
    for path in paths:
        out["models"][str(path)] = {}
        for name in names:
            opts = OPTION_SETS[name]
            meds = sessions(path, opts, a.sessions, a.runs)
            row = {"session_medians_us": [round(v, 1) for v in meds], "median_us": round(float(np.median(meds)), 1),
                   "spread": round(max(meds) / min(meds) - 1, 4)}
            out["models"][str(path)][name] = row
            print(path.name, name, row, flush=True)
    for name in () if a.no_config_cost else ("exhaustive_nhwc", "heuristic_nhwc"):
        out["config_cost"][name] = config_cost(OPTION_SETS[name], a.configs)
        print("config cost", name, out["config_cost"][name], flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
