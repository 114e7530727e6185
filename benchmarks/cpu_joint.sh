#!/usr/bin/env bash
# Issue 19's two-device acceptance on this machine: the built-in example's lookup tables under ONNX
# Runtime CPU with 1 and with 2 intra-op threads (two "devices" whose stairs differ), then one
# joint plan over both tables and each table's own plan, all at --speedup 1.5. The joint run measures
# its emitted model under both thread counts (both runtimes run here). Writes OUT/summary.json.
#   bash benchmarks/cpu_joint.sh OUT [SPEEDUP]
# TABLES=DIR reuses DIR's table_1thread.json and table_2thread.json (profiled earlier on this
# machine) instead of profiling again.
set -uo pipefail
res=${1:?usage: bash benchmarks/cpu_joint.sh OUT [SPEEDUP]}
speedup=${2:-1.5}
work=$(mktemp -d)
mkdir -p "$res"
{ uname -srm; nproc; git log -1 --format='code: %H %s'; date -u; uptime; } > "$res/machine.txt" 2>&1
for t in 1 2; do
  if [ -n "${TABLES:-}" ]; then cp "$TABLES/table_${t}thread.json" "$res/"; continue; fi
  python -m locp_trt profile example --runtime onnxruntime --threads $t --store "$work/s$t.sqlite" \
      --out "$res/table_${t}thread.json" --no-progress > "$res/log_profile_$t.txt" 2>&1
done
opt() {  # name, then the tables
  local name=$1; shift
  local t0=$SECONDS
  python -m locp_trt optimize example --device cpu --speedup "$speedup" --no-progress --out "$work/$name" \
      "$@" > "$res/log_$name.txt" 2>&1
  echo "{\"run\": \"$name\", \"exit\": $?, \"wall_s\": $((SECONDS - t0))}" >> "$res/walls.jsonl"
  cp "$work/$name/report.json" "$res/report_$name.json"; cp "$work/$name/plan.json" "$res/plan_$name.json"
}
opt joint --latency-table "$res/table_1thread.json" --latency-table "$res/table_2thread.json"
opt only_1thread --latency-table "$res/table_1thread.json"
opt only_2thread --latency-table "$res/table_2thread.json"
python - "$res" <<'PY' | tee "$res/summary.json"
import json, sys
from pathlib import Path
res = Path(sys.argv[1])
def widths(name):
    plan = json.loads((res / f"plan_{name}.json").read_text())
    groups = plan.get("groups") or plan.get("widths") or plan
    return {g: (v["width"] if isinstance(v, dict) else v) for g, v in groups.items()} if isinstance(groups, dict) else groups
joint, one, two = (widths(n) for n in ("joint", "only_1thread", "only_2thread"))
rep = json.loads((res / "report_joint.json").read_text())
print(json.dumps({"status": rep["result"].get("status"), "joint_differs_from_1thread": joint != one, "joint_differs_from_2thread": joint != two,
                  "groups_differing": {g: [joint.get(g), one.get(g), two.get(g)] for g in joint
                                       if not (joint.get(g) == one.get(g) == two.get(g))},
                  "devices": rep.get("devices")}, indent=1, default=str))
PY
date -u >> "$res/machine.txt"
