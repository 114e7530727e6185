#!/usr/bin/env bash
# Issue 19's two-device acceptance on this machine: the built-in example's lookup tables on two
# "devices" whose stairs differ (by default ONNX Runtime CPU with 1 and with 2 intra-op threads),
# then one joint plan over both tables and each table's own plan, all at --speedup 1.5. The joint
# run measures its emitted model under every device (all their runtimes run here). Writes
# OUT/summary.json.
#   bash benchmarks/cpu_joint.sh OUT [SPEEDUP]
# DEVICES="RUNTIME:THREADS ..." picks the devices (default "onnxruntime:1 onnxruntime:2"; e.g.
# "onnxruntime:1 torch-cpu:1" for two runtimes, each on one core). TABLES=DIR reuses DIR's tables
# where it has them (profiled earlier on this machine) instead of profiling again.
set -uo pipefail
res=${1:?usage: bash benchmarks/cpu_joint.sh OUT [SPEEDUP]}
speedup=${2:-1.5}
devices=${DEVICES:-onnxruntime:1 onnxruntime:2}
work=$(mktemp -d)
mkdir -p "$res"
{ uname -srm; nproc; git log -1 --format='code: %H %s'; date -u; uptime; echo "devices: $devices"; } > "$res/machine.txt" 2>&1
tag() {  # runtime:threads -> the table's name (ORT keeps the first attempts' names)
  local rt=${1%%:*} t=${1##*:}
  if [ "$rt" = onnxruntime ]; then echo "${t}thread"; else echo "${rt}_${t}thread"; fi
}
tables=()
for d in $devices; do
  name=$(tag "$d")
  tables+=(--latency-table "$res/table_$name.json")
  if [ -n "${TABLES:-}" ] && [ -f "$TABLES/table_$name.json" ]; then cp "$TABLES/table_$name.json" "$res/"; continue; fi
  python -m locp_trt profile example --runtime "${d%%:*}" --threads "${d##*:}" --store "$work/$name.sqlite" \
      --out "$res/table_$name.json" --no-progress > "$res/log_profile_$name.txt" 2>&1
done
opt() {  # name, then the tables
  local name=$1; shift
  local t0=$SECONDS
  python -m locp_trt optimize example --device cpu --speedup "$speedup" --no-progress --out "$work/$name" \
      "$@" > "$res/log_$name.txt" 2>&1
  echo "{\"run\": \"$name\", \"exit\": $?, \"wall_s\": $((SECONDS - t0))}" >> "$res/walls.jsonl"
  cp "$work/$name/report.json" "$res/report_$name.json"; cp "$work/$name/plan.json" "$res/plan_$name.json"
}
opt joint "${tables[@]}"
names=()
for d in $devices; do
  name=$(tag "$d"); names+=("$name")
  opt "only_$name" --latency-table "$res/table_$name.json"
done
python - "$res" "${names[@]}" <<'PY' | tee "$res/summary.json"
import json, sys
from pathlib import Path
res, names = Path(sys.argv[1]), sys.argv[2:]
def widths(name):
    plan = json.loads((res / f"plan_{name}.json").read_text())
    groups = plan.get("groups") or plan.get("widths") or plan
    return {g: (v["width"] if isinstance(v, dict) else v) for g, v in groups.items()} if isinstance(groups, dict) else groups
joint = widths("joint")
alone = {n: widths(f"only_{n}") for n in names}
rep = json.loads((res / "report_joint.json").read_text())
print(json.dumps({"status": rep["result"].get("status"),
                  **{f"joint_differs_from_{n}": joint != w for n, w in alone.items()},
                  "groups_differing": {g: [joint.get(g), *(w.get(g) for w in alone.values())] for g in joint
                                       if len({joint.get(g), *(w.get(g) for w in alone.values())}) > 1},
                  "devices": [{"device": d["device"], "predicted": d.get("predicted_speedup"),
                               **({k: (d.get("measured") or {}).get(k) for k in ("speedup", "speedup_low", "speedup_high", "verdict")})}
                              for d in rep.get("devices") or []]}, indent=1, default=str))
PY
date -u >> "$res/machine.txt"
