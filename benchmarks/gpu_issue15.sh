#!/usr/bin/env bash
# The device calls behind benchmarks/results/gpu_h200_*_resnet50_landing (issue 15), on the lent
# H200, from the repository root, with `.whl` (torch-pruning, zstandard) carried and, for the ORT
# steps, onnxruntime-gpu's four parts already in /tmp/ortparts (shared/GPU.md).
#   bash benchmarks/gpu_issue15.sh ort SEEDS...     ORT-CUDA landing runs (+ settings on the first)
#   bash benchmarks/gpu_issue15.sh torch SEEDS...   torch-CUDA landing runs
# GRAPHCHECK=report.json first times that report's step shapes of ResNet-50 in fresh sessions
# with and without CUDA graphs (ort_settings.py --report). SETTINGS=0 skips ort_settings.py after the first ORT seed. PYTEST=1 also runs `pytest -m gpu` at the end when time is left; EXPERIMENTS=1 first runs
# ort_settings.py --experiments (per-config cost breakdown, fresh-session spread by width alignment).
# Each call leaves one tarball in $OUT (logs, reports, independent checks, device line); the call
# stops starting runs after LIMIT seconds (default 540) so the tarball is always written.
set -uo pipefail
mode=$1; shift
res=/tmp/res_${mode}_$(echo "$@" | tr ' ' '_')
mkdir -p "$res"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
if [ "$mode" = ort ] || [ "${EXPERIMENTS:-0}" = 1 ]; then
  if [ ! -d /tmp/ortgpu-site/onnxruntime ]; then
    mkdir -p /tmp/ortgpu-site
    cat /tmp/ortparts/ortgpu.part.* | python3 -c "import sys,zstandard; zstandard.ZstdDecompressor(max_window_size=2**31).copy_stream(sys.stdin.buffer, sys.stdout.buffer)" | tar -x -C /tmp/ortgpu-site
  fi
  export PYTHONPATH=/tmp/ortgpu-site:$PYTHONPATH
fi
runtime=torch
[ "$mode" = ort ] && runtime=onnxruntime-cuda
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c "import torch,onnxruntime as o;print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version(), 'onnxruntime', o.__version__, o.get_available_providers())"
  date -u; } > "$res/device.txt" 2>&1
# GPU memory, load and clocks every 2 s while the runs go (smi.csv): what the process left behind
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu,clocks.sm,temperature.gpu,power.draw \
    --format=csv -l 2 > "$res/smi.csv" 2>&1 &
smi=$!
start=$SECONDS
limit=${LIMIT:-540}
if [ "${EXPERIMENTS:-0}" = 1 ]; then
  timeout 150 python3 benchmarks/ort_settings.py --experiments --sessions 4 --configs 20 \
      --json "$res/ort_experiments.json" 2>&1 | tee -a "$res/driver.txt"
fi
if [ -n "${GRAPHCHECK:-}" ]; then  # a report.json: its steps' shapes, sessions with and without CUDA graphs
  timeout 200 python3 benchmarks/ort_settings.py --report "$GRAPHCHECK" --steps "${GRAPHSTEPS:-1,3}" \
      --sets heuristic_nhwc,heuristic_nhwc_graph,heuristic_nchw_graph --sessions 6 --runs 40 \
      --no-config-cost --json "$res/ort_graph.json" 2>&1 | tee -a "$res/driver.txt"
fi
for seed in "$@"; do
  if [ $((SECONDS - start)) -gt $((limit - 200)) ]; then echo "skipping seed $seed: time" >> "$res/device.txt"; continue; fi
  timeout $((limit - (SECONDS - start))) python3 benchmarks/gpu_landing.py --runtime $runtime --seeds "$seed" \
      --work /tmp/g15_$mode --out "$res" 2>&1 | tee -a "$res/driver.txt"
  if [ "${SETTINGS:-1}" = 1 ] && [ "$mode" = ort ] && [ ! -f "$res/ort_settings.json" ] && [ -f /tmp/g15_ort/run_s$seed/model.onnx ] \
      && [ $((SECONDS - start)) -lt $((limit - 120)) ]; then
    python3 -c "from locp_trt.export import export_onnx; from locp_trt.loading import load_model; m=load_model('/tmp/g15_ort/r50_s$seed.pt', arch='torchvision.models:resnet50', input_shape=(3,224,224)).module; export_onnx(m, '/tmp/base.onnx', (32,3,224,224), 'fp16', verify=False)" \
      && timeout 100 python3 benchmarks/ort_settings.py /tmp/base.onnx /tmp/g15_ort/run_s$seed/model.onnx \
         --sessions 3 --configs 30 --json "$res/ort_settings.json" 2>&1 | tee -a "$res/driver.txt"
  fi
done
if [ "${PYTEST:-0}" = 1 ] && [ $((SECONDS - start)) -lt $((limit - 60)) ]; then
  timeout $((limit - (SECONDS - start) - 10)) python3 -m pytest -m gpu -q -n 0 -p no:cacheprovider tests \
      > "$res/pytest_gpu.txt" 2>&1
fi
kill $smi 2>/dev/null
tar czf "$OUT/$(basename "$res").tgz" -C "$res" .
