#!/usr/bin/env bash
# One epoch on the real data with 2 worker processes on each framework's own engine, then in one process,
# one run at a time; then one distributed-epoch record per run in benchmarks/records/ (docs/distributed.md's
# table renders from them: vgg results render). The recipe is the first
# epoch of benchmarks/accuracy.sh (small VGG at 56x56, global batch 128, momentum 0.9, lr warming up
# linearly to 0.02 over the epoch); without the warm-up TF's initial weights do not train in one epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion-mnist}
RECIPE=(--arch small --resize 56 --epochs 1 --batch-size 128 --seed 0 --momentum 0.9 --lr 0.02
        --warmup-epochs 1 --data-dir "$DATA" --no-progress)
for w in ${WORKERS:-2 1}; do
  for b in ${BACKENDS:-torch tf jax mxnet}; do
    rm -rf "runs/dist-$b-w$w"
    .venv/bin/vgg train --backend "$b" "${RECIPE[@]}" --workers "$w" --out "runs/dist-$b-w$w"
  done
done
.venv/bin/python benchmarks/distributed_table.py runs/dist-*-w1 runs/dist-*-w2
