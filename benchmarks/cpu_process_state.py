"""ORT CPU: whole-model comparisons in the measuring process and in a child process (model_host),
before and after the process has timed N one-layer graphs, as the loop's process has.

    python benchmarks/cpu_process_state.py OPTIMIZE_OUT_DIR 3000
"""
import json, sys, time, random
from pathlib import Path
from locp_trt.delivered import _reference_module, read_runtime_file
from locp_trt.latency import LayerConfig, Op, Precision
from locp_trt.latency.compare import CompareRule, compare_builds
from locp_trt.latency.runtimes.onnxrt import OrtCpuRuntime

out = Path(sys.argv[1]); n_layers = int(sys.argv[2])
info = read_runtime_file(out)
shape = tuple(info["input_shape"]); prec = Precision.parse(info["precision"])
ref = _reference_module(info, None)
cand = (out / "model.onnx").read_bytes()
rule = CompareRule(max_rounds=12, builds=3, max_builds=3)
rts = {"in": OrtCpuRuntime(isolate=False), "host": OrtCpuRuntime(isolate=True)}
makers = {k: (rt.builder(ref, shape, prec), rt.onnx_builder(cand, shape, prec)) for k, rt in rts.items()}
def both(tag):
    for k in ("in", "host", "in", "host"):
        c = compare_builds(*makers[k], rule, builds=3)
        print(tag, k, round(c.speedup, 4), round(c.low, 4), round(c.high, 4), flush=True)
both("clean")
keep = []
rng = random.Random(0)
t = time.time()
rt = rts["in"]
for i in range(n_layers):
    c = rng.choice([8, 16, 24, 32, 48, 64]); hw = rng.choice([8, 16, 32])
    cfg = LayerConfig(Op.CONV, rng.randint(4, 64), rng.randint(4, 64), kernel=3, padding=1, input_hw=(hw, hw))
    rt.time_layer(cfg)
print("layers", n_layers, round(time.time() - t, 1), flush=True)
both("after")
