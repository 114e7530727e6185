#!/usr/bin/env bash
# Issue 21: one optimize cell run alone, then the same under torchrun with NPROC processes, one
# after the other (never side by side: each times latency), sharing one latency store, then
# `benchmarks/ddp_compare.py` on their report.json files (compare.txt, compare.json; exit 3 when
# a bar of the issue does not hold).
#
#   bash benchmarks/torchrun_cell.sh OUT NPROC OPTIMIZE_ARGS...
#
# On the lent H200 (after the dataset parts and the teacher, as benchmarks/gpu_accuracy.sh says):
#   bash benchmarks/torchrun_cell.sh $OUT/r56 1 \
#       benchmarks/results/gpu_h200_accuracy_resnet56_default/resnet56_fashion_mnist_94.70.pt \
#       --arch resnet56 --input-shape 1,28,28 --device cpu \
#       --data fashion-mnist:.data/fashion-mnist --speedup 2 --batch-size 512 --lr 0.02
# (the accuracy benchmark's cell: timed on ONNX Runtime CPU, 1 thread, fine-tuned on the GPU;
# torch-CUDA timing cannot land 2x on ResNet-56 at 28x28, its kernels are launch-bound)
# Live timing decides each step, so two runs of that cell prune differently (on the H200's host
# two runs alone differed by 2 points: benchmarks/results/gpu_h200_torchrun_resnet56/). To compare
# without timing noise, decide from one lookup table (with one process both runs then take one
# pruning; with two, each step's importances follow fine-tunes on split data and can still differ:
# benchmarks/results/cpu_torchrun_table_example/):
#   gunzip -c benchmarks/results/gpu_h200_torchrun_resnet56/table_control/h200_host_ort_cpu_resnet56_table.json.gz \
#       > /tmp/t.json
#   bash benchmarks/torchrun_cell.sh $OUT/r56x2 2 MODEL --arch resnet56 --input-shape 1,28,28 \
#       --latency-table /tmp/t.json --precision fp32 --batch 1 \
#       --data fashion-mnist:.data/fashion-mnist --speedup 2 --batch-size 512 --lr 0.02
# (NPROC 2 on nvidia-h200-x2: the multi-GPU bars.) With PACK=1 the two run folders end as one
# OUT/runs.tar (their report.json, plan.json, pruned.pt, plots; no checkpoints/, model.onnx or
# latency store), so OUT holds 7 files: the device tool returns at most 8. On this CPU machine:
#   bash benchmarks/torchrun_cell.sh /tmp/tr 2 example --device cpu
set -uo pipefail
out=${1:?output folder} nproc=${2:?processes}
shift 2
mkdir -p "$out"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  echo "cores $(nproc)"
} > "$out/device.txt"
common=(--store "$out/latency.sqlite" --no-progress --no-engine)
python3 -m locp_trt optimize "$@" "${common[@]}" --out "$out/alone" > "$out/alone.log" 2>&1
echo "alone: exit $?" | tee "$out/exits.txt"
torchrun --standalone --nproc-per-node "$nproc" -m locp_trt optimize "$@" "${common[@]}" \
  --out "$out/torchrun$nproc" > "$out/torchrun$nproc.log" 2>&1
echo "torchrun $nproc: exit $?" | tee -a "$out/exits.txt"
python3 benchmarks/ddp_compare.py "$out/alone/report.json" "$out/torchrun$nproc/report.json" \
  --json "$out/compare.json" | tee "$out/compare.txt"
rc=${PIPESTATUS[0]}
if [[ "${PACK:-0}" == 1 ]]; then
  tar -cf "$out/runs.tar" -C "$out" --exclude=checkpoints --exclude=model.onnx alone "torchrun$nproc" &&
    rm -rf "$out/alone" "$out/torchrun$nproc" "$out"/latency.sqlite*
fi
exit "$rc"
