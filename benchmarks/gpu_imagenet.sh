#!/usr/bin/env bash
# One device call of issue 17's ImageNet-size table (benchmarks/imagenet_table.py) on the lent H200,
# from the repository root, with `.whl` (torch-pruning, zstandard) carried and, for ORT-CUDA,
# onnxruntime-gpu's four parts already in /tmp/ortparts (shared/GPU.md; benchmarks/README.md has
# the plan of calls).
#   bash benchmarks/gpu_imagenet.sh RUNTIME MODELS [TARGETS]
#     RUNTIME  torch-cuda | onnxruntime-cuda
#     MODELS   comma-separated torchvision names (random weights), e.g. resnet50,mobilenet_v2
#     TARGETS  LOCP's speedups, default 2,1.5 (every model's 2x cell runs before any 1.5x cell)
# Environment: LIMIT (s this script may take in all, default 585 for a 600 s call), BUDGET (s the
# table may run; default LIMIT less the set-up so far less 45 s for imports, the last cell's
# timing and writing), BATCH (32), PRECISION (fp16), NAME (results folder under $OUT,
# default gpu_h200_imagenet_<runtime>_<models>). The latency store lives in /tmp, so a later call
# on the still-warm machine reuses it for the same models.
# Leaves $OUT/NAME/: results.json, results.md, log.txt (the run's progress lines), device.txt
# (nvidia-smi, torch/cuDNN/onnxruntime versions, date), smi.csv (memory, load, clocks every 2 s).
set -uo pipefail
rt=$1; models=$2; targets=${3:-2,1.5}
limit=${LIMIT:-585}
name=${NAME:-gpu_h200_imagenet_${rt}_$(echo "$models" | tr ',' '_')}
res=${OUT:-/tmp/out}/$name
mkdir -p "$res"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
if [ "$rt" = onnxruntime-cuda ]; then
  if [ ! -d /tmp/ortgpu-site/onnxruntime ]; then
    if ! ls /tmp/ortparts/ortgpu.part.* >/dev/null 2>&1; then
      echo "no /tmp/ortparts/ortgpu.part.*: carry the four parts first (shared/GPU.md)" | tee "$res/log.txt"
      exit 2
    fi
    mkdir -p /tmp/ortgpu-site
    cat /tmp/ortparts/ortgpu.part.* | python3 -c "import sys,zstandard; zstandard.ZstdDecompressor(max_window_size=2**31).copy_stream(sys.stdin.buffer, sys.stdout.buffer)" | tar -x -C /tmp/ortgpu-site
  fi
  export PYTHONPATH=/tmp/ortgpu-site:$PYTHONPATH
fi
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader
  python3 -c "import importlib.metadata as md, torch,torchvision,onnxruntime as o;print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version(), 'torchvision', torchvision.__version__, 'torch-pruning', md.version('torch-pruning'), 'onnxruntime', o.__version__, o.get_available_providers())"
  # (no git line: the device's copy of the tree carries a stale .git; the results README names the commit)
  date -u; } > "$res/device.txt" 2>&1
budget=${BUDGET:-$((limit - SECONDS - 45))}
echo "set-up took $SECONDS s; table budget $budget s" >> "$res/device.txt"
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu,clocks.sm,temperature.gpu,power.draw \
    --format=csv -l 2 > "$res/smi.csv" 2>&1 &
smi=$!
# The table stops itself at BUDGET (results rewritten after every row); the timeout's SIGTERM at
# LIMIT still leaves its JSON and markdown.
timeout $((limit - SECONDS)) python3 benchmarks/imagenet_table.py --runtime "$rt" --models "$models" \
    --targets "$targets" --batch "${BATCH:-32}" --precision "${PRECISION:-fp16}" --input-size 224 \
    --budget-s "$budget" --store "/tmp/imagenet_store_${rt}.sqlite" --out "$res" --no-progress \
    > "$res/stdout.txt" 2> "$res/log.txt"
echo "exit $? after $SECONDS s" >> "$res/device.txt"
kill $smi 2>/dev/null
tail -n 25 "$res/stdout.txt"
