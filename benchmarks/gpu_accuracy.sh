#!/usr/bin/env bash
# Issue 16's accuracy table on the lent H200: `benchmarks/accuracy.py run` for one model, then its
# report, everything under $OUT/acc (results.json, table.md, accuracy_vs_speedup.png, the log and
# device.txt with the date, GPU, driver and versions).
#
#   bash benchmarks/gpu_accuracy.sh MODEL FT_EPOCHS BUDGET_S [more `accuracy.py run` options]
#
# Replicates on a fresh machine: `rebuild` re-prunes every baseline whose file is gone, fine-tuned
# or not, so `finetune --seed N` finds them all (the run of gpu_h200_accuracy_mobilenetv2_4seeds
# shows the way, and the slip to avoid: set shell variables before a line that ends in `&`).
#
# Needs (carried): `.whl/` with torch-pruning, `.data/fashion-mnist/` with the four IDX .gz files
# of Debian's dataset-fashion-mnist. The data (30 MB) no longer fits one carry beside the tracked
# tree (64 MiB in all), so it travels in three parts through the ignored `.dparts/`:
#   here, once:   mkdir -p /tmp/dp && tar -cf /tmp/dp/fm.tar -C .data fashion-mnist &&
#                 split -n 3 -d /tmp/dp/fm.tar /tmp/dp/fm.part.
#   call k = 0, 1, 2 (only part k in .dparts/; carry ".dparts", and ".whl" in calls 0 and 2):
#                 mkdir -p /tmp/dp && cp .dparts/* /tmp/dp/
#   the last call, before this script:
#                 cat /tmp/dp/fm.part.0* > /tmp/dp/fm.tar && mkdir -p .data && tar -xf /tmp/dp/fm.tar -C .data
# The run's folder is also copied to /tmp/acc_MODEL (the machine's /tmp lasts while it stays warm;
# $OUT and .data do not), so a next call can fine-tune what the budget cut, in parallel:
#   tar -xf /tmp/dp/fm.tar -C .data  (mkdir -p .data first), then
#   PYTHONPATH=/tmp/site:$PWD python3 benchmarks/accuracy.py finetune /tmp/acc_MODEL/results.json \
#       --missing --gpu-workers 6 --weights /tmp/acc_MODEL --data fashion-mnist:.data/fashion-mnist \
#       --out $OUT/ft --targets 1.5 2.0 2.5 --ft-epochs FT_EPOCHS
# The machine goes back after 30 s idle, and /tmp with it. So LOCP's variant files (trained inside
# its loop, they cannot be pruned again) come back in $OUT/acc/locp_variants.tar; the baselines'
# can be (`accuracy.py rebuild`, widths checked). On a fresh machine: parts 0-2 again, then a call
# carrying the tar in the ignored `.variants/` (no data part beside it: 64 MiB), which runs
#   mkdir -p /tmp/accw && tar -xf .variants/locp_variants.tar -C /tmp/accw
# and, in that call or the next, `accuracy.py rebuild RESULTS --weights W --work /tmp/accw --out /tmp/rb`
# (W: a folder with the teacher as MODEL.pt) before `finetune /tmp/rb/results.json --missing`.
set -uo pipefail
model=$1 epochs=$2 budget=$3
shift 3
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
mkdir -p "$OUT/acc"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, onnxruntime; from importlib.metadata import version as v; print('torch', torch.__version__, 'onnxruntime', onnxruntime.__version__, 'torch-pruning', v('torch-pruning'))"
  echo "cores $(nproc)"
} > "$OUT/acc/device.txt"
python3 benchmarks/accuracy.py run --data fashion-mnist:.data/fashion-mnist --models "$model" \
  --ft-epochs "$epochs" --budget-s "$budget" --out "$OUT/acc" --work /tmp/accw "$@" 2>&1 | tee "$OUT/acc/acc_log.txt"
rc=${PIPESTATUS[0]}
python3 benchmarks/accuracy.py report "$OUT/acc/results.json" --out "$OUT/acc" > /dev/null
rm -rf "/tmp/acc_$model" && cp -r "$OUT/acc" "/tmp/acc_$model"
# what comes back: at most 8 files; the teacher is committed already, LOCP's variants are not
rm -f "$OUT/acc/$model.pt"
(cd /tmp/accw && tar -cf "$OUT/acc/locp_variants.tar" "$model"_locp*.pt)
exit "$rc"
