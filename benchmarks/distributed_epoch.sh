#!/usr/bin/env bash
# One epoch of the same recipe on the real data, one process and then 2 worker processes on each framework's
# own engine (small VGG at 56x56, global batch 128), one run at a time; then the table in
# benchmarks/results/distributed-epoch-56.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion-mnist}
RECIPE=(--arch small --resize 56 --epochs 1 --batch-size 128 --seed 0 --momentum 0.9 --lr 0.02
        --schedule cosine --data-dir "$DATA" --no-progress)
for b in ${BACKENDS:-torch tf jax mxnet}; do
  for w in 1 2; do
    rm -rf "runs/dist-$b-w$w"
    .venv/bin/vgg train --backend "$b" "${RECIPE[@]}" --workers "$w" --out "runs/dist-$b-w$w"
  done
done
.venv/bin/python benchmarks/distributed_table.py runs/dist-*-w1 runs/dist-*-w2
