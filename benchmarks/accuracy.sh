#!/usr/bin/env bash
# The accuracy benchmark: small VGG at 56x56, 10 epochs, one recipe for all four backends, one at a time
# (2 cores: never two trainings at once), then one accuracy record per run in benchmarks/records/ (the
# tables in docs/results.md render from them: vgg results render) and the histories in benchmarks/results/.
# ARCH=small_bn runs the batch-norm net with its own recipe (BN takes a larger lr; weight decay 5e-4).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion-mnist}
ARCH=${ARCH:-small}
RECIPE="--lr 0.02"
[[ $ARCH == *_bn ]] && RECIPE="--lr 0.05 --weight-decay 5e-4"
RUNS=runs/${ARCH#small}  # runs/ for small, runs/_bn for small_bn
for b in ${BACKENDS:-torch mxnet jax tf}; do
  .venv/bin/vgg train --backend "$b" --arch "$ARCH" --resize 56 --epochs 10 --batch-size 128 --seed 0 \
    --momentum 0.9 $RECIPE --schedule cosine --warmup-epochs 1 --data-dir "$DATA" --out "$RUNS/$b-56"
done
.venv/bin/python benchmarks/accuracy_table.py "$RUNS"/*-56
