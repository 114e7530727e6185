#!/usr/bin/env bash
# Staircases of one conv layer under the torch-CUDA runtime on the lent GPU (issue: latency engine).
# Usage (on the GPU machine, from the repo root): bash benchmarks/gpu_stairs.sh OUT_DIR
set -uo pipefail
out=${1:?output directory}
mkdir -p "$out"
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
} > "$out/device.txt" 2>&1
cat "$out/device.txt"
run() { echo "+ python -m locp_trt $*"; python3 -m locp_trt "$@"; }
# The acceptance command of the issue, with --runtime torch (fp32 and fp16, batch 1).
run stairs --runtime torch --op conv --cin 128 --hw 14 --kernel 3 --widths 56-72 --no-store --json "$out/torch_fp32_b1_56-72.json"
run stairs --runtime torch --op conv --cin 128 --hw 14 --kernel 3 --widths 56-72 --precision fp16 --no-store --json "$out/torch_fp16_b1_56-72.json"
# A wider sweep at batch 32 (as in shared/evidence), with the plot.
run stairs --runtime torch --op conv --cin 256 --hw 14 --kernel 3 --widths 8-256 --precision fp16 --batch 32 --no-store --json "$out/torch_fp16_b32_8-256.json" --plot "$out/torch_fp16_b32_8-256.png"
