cd /work/main
for r in 1 2 3; do
  d=/tmp/pp/p$r; mkdir -p $d
  s=$(date +%s)
  python -m locp_trt profile example --device cpu --out $d/table.json --store $d/s.sqlite --no-progress --passes 2 > $d/profile.txt 2>&1
  echo "round $r exit $? wall $(( $(date +%s) - s )) s" >> /tmp/pp/summary.txt
done
echo done > /tmp/pp/done
