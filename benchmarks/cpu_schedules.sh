#!/usr/bin/env bash
# Issue 16, item 4, on this CPU: which fine-tuning schedule recovers more at equal epochs, run as a
# user runs the tool. The committed ResNet-56 teacher (Fashion-MNIST, 94.70%) is pruned by
# `optimize ... --data` to each target under ONNX Runtime CPU (1 thread) with:
#   oneshot  one step to the target, then one final fine-tune of TOTAL epochs;
#   steps    the tool's three steps, one epoch of fine-tuning after each, then TOTAL - 3 final epochs.
# Both use the tool's fine-tuning (distillation from the unpruned model, lr 0.01, batch 128) and
# Taylor importance (the default with data). A final check that is not clear adds a step (and,
# for oneshot, its final fine-tune again): the summary counts the fine-tunes each run really did.
#   bash benchmarks/cpu_schedules.sh OUT [TARGETS] [TOTAL]
# Environment: DATA (fashion-mnist:.data/fashion-mnist), TRAIN_LIMIT (6000 training images),
# SEED (0). Writes OUT/log_<run>.txt, OUT/report_<run>.json, OUT/summary.json.
set -uo pipefail
res=${1:?usage: bash benchmarks/cpu_schedules.sh OUT [TARGETS] [TOTAL]}
targets=${2:-2,2.5}
total=${3:-4}
weights=benchmarks/results/gpu_h200_accuracy_resnet56_default/resnet56_fashion_mnist_94.70.pt
mkdir -p "$res"
work=$(mktemp -d)
{ uname -srm; nproc; python -c "import onnxruntime, torch; print('onnxruntime', onnxruntime.__version__, 'torch', torch.__version__)"
  git log -1 --format='code: %H %s'; date -u; uptime; } > "$res/machine.txt" 2>&1
run() {  # name, then optimize's arguments
  local name=$1; shift
  local t0=$SECONDS
  python -m locp_trt optimize "$weights" --arch resnet56 --input-shape 1,28,28 --device cpu \
      --data "${DATA:-fashion-mnist:.data/fashion-mnist}" --train-limit "${TRAIN_LIMIT:-6000}" \
      --seed "${SEED:-0}" --no-progress --store "$work/$name.sqlite" --out "$work/$name" "$@" \
      > "$res/log_$name.txt" 2>&1
  echo "{\"run\": \"$name\", \"exit\": $?, \"wall_s\": $((SECONDS - t0))}" >> "$res/walls.jsonl"
  cp "$work/$name/report.json" "$res/report_$name.json" 2>/dev/null
}
for t in ${targets//,/ }; do
  run "oneshot_${t}x" --speedup "$t" --epochs 0 --final-epochs "$total"
  run "steps_${t}x" --speedup "$t" --steps 3 --epochs 1 --final-epochs $((total - 3))
done
python - "$res" <<'PY' | tee "$res/summary.json"
import json, sys
from pathlib import Path
res = Path(sys.argv[1])
walls = {w["run"]: w for w in map(json.loads, (res / "walls.jsonl").read_text().splitlines())}
rows = []
for name, w in walls.items():
    f = res / f"report_{name}.json"
    if not f.exists():
        rows.append({"run": name, "exit": w["exit"], "wall_s": w["wall_s"]})
        continue
    rep = json.loads(f.read_text())
    r, hist = rep["result"], rep["history"]
    rows.append({"run": name, "exit": w["exit"], "wall_s": w["wall_s"], "status": r.get("status"),
                 "speedup": r.get("speedup"), "accuracy_before": r.get("accuracy_before"),
                 "accuracy_after": r.get("accuracy_after"),
                 "lost": (None if r.get("accuracy_after") is None
                          else round(r["accuracy_before"] - r["accuracy_after"], 2)),
                 "steps": len(hist) - 1, "step_finetunes": sum(1 for h in hist if h.get("finetune_s")),
                 "final_finetunes": sum(1 for h in hist if h.get("final_finetune_s")),
                 "mflops_after": round(r["flops_after"] / 1e6, 1) if r.get("flops_after") else None})
print(json.dumps(rows, indent=1))
PY
date -u >> "$res/machine.txt"
