for i in 1 2 3; do s=$(date +%s); LOCP_TRT_STORE=/tmp/rx/store$i.sqlite PYTHONPATH=/tmp/rxc python -m locp_trt optimize example \
    --device cpu --no-progress --out /tmp/rx/ex$i > /tmp/rx/log$i.txt 2>&1; echo "run $i exit $? wall $(( $(date +%s) - s )) s" >> /tmp/rx/summary.txt; done
