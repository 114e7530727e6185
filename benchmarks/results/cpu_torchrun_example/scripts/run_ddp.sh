#!/usr/bin/env bash
# The torchrun acceptance run, with the CPU sampler beside it (all paths absolute).
set -u
cd /tmp/o21/acc
export PYTHONPATH=/tmp/wt21
rm -rf ddp store_ddp.sqlite* ddp_cpu.csv
python -c "import locp_trt; print(locp_trt.__file__)" > ddp_env.txt
(uptime; date -u) >> ddp_env.txt
python /tmp/o21/acc/cpu_sampler.py /tmp/o21/acc/ddp_cpu.csv 600 &
sampler=$!
sleep 1
start=$(date +%s.%N)
LOCP_TRT_STORE=/tmp/o21/acc/store_ddp.sqlite torchrun --nproc-per-node 2 -m locp_trt optimize example --device cpu \
    --out /tmp/o21/acc/ddp > /tmp/o21/acc/ddp_stdout.txt 2> >(python -u /tmp/o21/acc/stamp.py > /tmp/o21/acc/ddp_stderr_stamped.txt)
echo "exit $?" > /tmp/o21/acc/ddp_exit.txt
end=$(date +%s.%N)
python -c "print('wall', $end - $start)" >> /tmp/o21/acc/ddp_exit.txt
sleep 2
kill "$sampler"
uptime >> /tmp/o21/acc/ddp_env.txt
