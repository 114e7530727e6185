#!/usr/bin/env bash
# Issue 19's CPU acceptance: the built-in example as one family (1.3x, 1.6x, 2x) against the single
# 2x run (README's main job), each with an empty latency store of its own, on this machine; then
# `bench` on every output folder in a fresh process. Wall times, logs and checks go to OUT.
#   bash benchmarks/cpu_family.sh OUT
set -uo pipefail
res=${1:?usage: bash benchmarks/cpu_family.sh OUT}
work=$(mktemp -d)
mkdir -p "$res"
{ uname -srm; nproc; python -c "import onnxruntime, torch; print('onnxruntime', onnxruntime.__version__, 'torch', torch.__version__)"
  git log -1 --format='code: %H %s'; date -u; uptime; } > "$res/machine.txt" 2>&1
run() {  # name, then optimize's arguments
  local name=$1; shift
  local t0=$SECONDS
  python -m locp_trt optimize example --device cpu --no-progress --store "$work/$name.sqlite" \
      --out "$work/$name" "$@" > "$res/log_$name.txt" 2>&1
  echo "{\"run\": \"$name\", \"exit\": $?, \"wall_s\": $((SECONDS - t0))}" >> "$res/walls.jsonl"
}
run single --speedup 2
run family --speedup 1.3,1.6,2
for d in "$work/single" "$work"/family/*x; do
  tag=$(basename "$(dirname "$d")")_$(basename "$d"); [ "$d" = "$work/single" ] && tag=single
  python -m locp_trt bench "$d" --json "$res/delivered_$tag.json" > "$res/bench_$tag.txt" 2>&1
  cp "$d/report.json" "$res/report_$tag.json"
done
cp "$work/family/family.json" "$work/family/family.png" "$res/" 2>/dev/null
date -u >> "$res/machine.txt"; uptime >> "$res/machine.txt"
cat "$res/walls.jsonl"
