cd /work/main
for r in 2 3; do
  d=/tmp/ta/r$r; mkdir -p $d
  python -m locp_trt profile example --device cpu --out $d/table.json --store $d/s.sqlite --no-progress > $d/profile.txt 2>&1
  python benchmarks/table_anchor_probe.py $d/table.json benchmarks/results/cpu_table_mode_example/plan.json --work $d --repeats 4 --out $d/probe.json > $d/probe.txt 2>&1
done
echo done > /tmp/ta/done
