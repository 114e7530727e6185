#!/usr/bin/env bash
# LOCP on the lent GPU with the torch-CUDA runtime (no TensorRT there), then `bench` of the
# unpruned and the pruned model side by side.
#   bash benchmarks/gpu_optimize.sh OUT_DIR [ARCH] [BATCH] [SPEEDUP]
set -uo pipefail
out=${1:?output directory}; arch=${2:-resnet56}; batch=${3:-32}; speedup=${4:-2}
mkdir -p "$out"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"; } > "$out/device.txt" 2>&1
python3 -c "import torch, sys; from locp_trt.models import get_model; torch.manual_seed(0); torch.save(get_model('$arch').state_dict(), sys.argv[1])" "$out/$arch.pt"
run() { echo "+ python -m locp_trt $*"; python3 -m locp_trt "$@"; }
run optimize "$out/$arch.pt" --arch "$arch" --device desktop --runtime torch --precision fp16 \
    --batch "$batch" --speedup "$speedup" --out "$out/run" --store "$out/latency.sqlite" --no-progress --no-engine
for b in 1 "$batch"; do
  run bench "$out/$arch.pt" "$out/run/pruned.pt" --arch "$arch" --runtime torch --precision fp16 \
      --batch "$b" --iters 200 --json "$out/bench_fp16_b$b.json"
done
