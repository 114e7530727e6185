#!/usr/bin/env bash
# Issue 19: where the family's wall time goes beyond the single run's. Runs the single 2x run and
# the family (1.3x, 1.6x, 2x) of the built-in example, each with an empty latency store, under
# benchmarks/phase_times.py (wall and CPU seconds per phase, per member), the logs' lines prefixed
# with the seconds elapsed.   bash benchmarks/cpu_family_phases.sh OUT
set -uo pipefail
res=${1:?usage: bash benchmarks/cpu_family_phases.sh OUT}
work=$(mktemp -d)
mkdir -p "$res"
here=$(cd "$(dirname "$0")" && pwd)
stamp() {  # prefix each line with the seconds since the run started
  local t0; t0=$(date +%s.%N)
  while IFS= read -r line; do printf '%7.2f %s\n' "$(echo "$(date +%s.%N) - $t0" | bc)" "$line"; done
}
{ uname -srm; nproc; git log -1 --format='code: %H %s'; date -u; uptime; } > "$res/machine.txt" 2>&1
for run in single:2 family:1.3,1.6,2; do
  name=${run%%:*}
  PYTHONUNBUFFERED=1 python "$here/phase_times.py" "$res/phases_$name.json" -- optimize example --device cpu \
      --no-progress --store "$work/$name.sqlite" --out "$work/$name" --speedup "${run#*:}" 2>&1 \
    | stamp > "$res/log_$name.txt"
  uptime >> "$res/machine.txt"
done
python - "$res" <<'PY'
import json, sys
res = sys.argv[1]
s, f = (json.load(open(f"{res}/phases_{n}.json"))["phases"] for n in ("single", "family"))
keys = [k for k in f if "/" not in k]
print(f"{'phase':20s} {'single s':>9s} {'family s':>9s}  (wall; cpu in brackets)")
for k in keys:
    a, b = s.get(k, {"wall_s": 0, "cpu_s": 0}), f[k]
    print(f"{k:20s} {a['wall_s']:9.2f} {b['wall_s']:9.2f}  ({a['cpu_s']:.1f} / {b['cpu_s']:.1f})")
print(f"family / single wall: {f['total']['wall_s'] / s['total']['wall_s']:.3f}")
PY
