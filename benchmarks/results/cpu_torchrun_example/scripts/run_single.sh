#!/usr/bin/env bash
# The single-process run of the acceptance comparison (all paths absolute). $1: a suffix.
set -u
cd /tmp/o21/acc
export PYTHONPATH=/tmp/wt21
s=${1:-}
rm -rf single$s store_single$s.sqlite*
python -c "import locp_trt; print(locp_trt.__file__)" > single${s}_env.txt
(uptime; date -u) >> single${s}_env.txt
start=$(date +%s.%N)
LOCP_TRT_STORE=/tmp/o21/acc/store_single$s.sqlite python -m locp_trt optimize example --device cpu \
    --out /tmp/o21/acc/single$s > /tmp/o21/acc/single${s}_stdout.txt 2> /tmp/o21/acc/single${s}_stderr.txt
echo "exit $?" > /tmp/o21/acc/single${s}_exit.txt
end=$(date +%s.%N)
python -c "print('wall', $end - $start)" >> /tmp/o21/acc/single${s}_exit.txt
uptime >> /tmp/o21/acc/single${s}_env.txt
