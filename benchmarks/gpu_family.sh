#!/usr/bin/env bash
# Issue 19's H200 cell: torchvision ResNet-50 (random weights, seed 0) as one family 1.5/2/2.2x under
# torch-CUDA fp16 batch 32, every member checked by its own `bench` in a fresh process, then the
# single 2x run of the same model for the wall-time comparison. From the repository root on the
# device with `.whl` carried (torch-pruning, zstandard); leaves one tarball in $OUT.
#   LIMIT=560 bash benchmarks/gpu_family.sh [SPEEDUPS]     (default 1.5,2,2.2)
set -uo pipefail
speedups=${1:-1.5,2,2.2}
res=/tmp/res_family
mkdir -p "$res"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c "import torch;print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
  git log -1 --format='code: %H %s' 2>/dev/null; date -u; } > "$res/device.txt" 2>&1
start=$SECONDS
limit=${LIMIT:-560}
timeout $((limit - 30)) python3 benchmarks/gpu_landing.py --runtime torch --speedup "$speedups" --seeds 0 \
    --work /tmp/gf_family --out "$res/family" 2>&1 | tee -a "$res/driver.txt"
left=$((limit - (SECONDS - start)))
if [ $left -gt 150 ]; then
  timeout $((left - 10)) python3 benchmarks/gpu_landing.py --runtime torch --speedup 2 --seeds 0 \
      --work /tmp/gf_single --out "$res/single" 2>&1 | tee -a "$res/driver.txt"
else
  echo "skipping the single 2x run: ${left}s left" >> "$res/device.txt"
fi
date -u >> "$res/device.txt"
tar czf "$OUT/res_family.tgz" -C "$res" .
