#!/usr/bin/env bash
# The accuracy benchmark: small VGG at 56x56, 10 epochs, one recipe for all four backends, one at a time
# (2 cores: never two trainings at once), then the table in benchmarks/results/accuracy-56.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion-mnist}
for b in ${BACKENDS:-torch mxnet jax tf}; do
  .venv/bin/vgg train --backend "$b" --arch small --resize 56 --epochs 10 --batch-size 128 --seed 0 \
    --momentum 0.9 --lr 0.02 --schedule cosine --warmup-epochs 1 --data-dir "$DATA" --out "runs/$b-56"
done
.venv/bin/python benchmarks/accuracy_table.py runs/*-56
