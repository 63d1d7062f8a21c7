#!/usr/bin/env bash
# The GPU path, checked in one run of about 8 minutes where a GPU is available (the device machines have
# torch and JAX for CUDA, no TensorFlow or MXNet, and no package registry):
#   bash benchmarks/gpu_check.sh OUT_DIR
# 1. the GPU tests (tests/test_gpu.py: logits against the float64 oracle with TF32 off, bf16 against the
#    rounding oracle, a bf16 training step on the device) for torch and JAX;
# 2. one epoch of `vgg train --device gpu` per backend on made-up Fashion-MNIST-shaped data (the machine has
#    no copy of the real files), fp32 and bf16;
# 3. the bf16 and fp32 (TF32 off and on) training step at 224x224, examples/s, for torch and JAX
#    (benchmarks/gpu_step.py; its record, with the machine and its GPU, goes into OUT_DIR);
# 4. `vgg parity --device gpu` for torch and JAX in fp32 (TF32 off) and bf16, against the CPU's NumPy oracle;
# 5. `vgg predict --device gpu` on a native export and `vgg compare --device gpu --precision fp32,tf32,bf16`
#    at 224 for torch and JAX (one round, 5 s a cell) with the GPU's name and its fp32, tf32 and bf16 product
#    ceilings, its report in OUT_DIR/compare.
# Everything it prints goes to OUT_DIR/gpu_check.log too; on a machine without a GPU each part says so.
# The project's small pure-Python dependencies may be missing there (no registry): fetch them here first,
#   pip download -d wheelhouse tqdm threadpoolctl matplotlib
# and carry the (git-ignored) wheelhouse/ folder with the tree; this script installs from it offline.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
PY=${PYTHON:-python}
echo "== $(date -u +%FT%TZ); $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
if [ -d wheelhouse ]; then
  "$PY" -m pip install -q --no-index --find-links wheelhouse tqdm threadpoolctl matplotlib \
    || echo "(could not install the carried wheels)"
fi
"$PY" -m pip install -q --no-deps -e . 2>/dev/null || echo "(pip install --no-deps -e . failed; running from the tree)"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} VGG_EXPECT_ABSENT=tf,mxnet

echo "== 1. GPU tests"
timeout 240 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -rs 2>&1 | tail -15

echo "== 2. one epoch of vgg train --device gpu (made-up data, 2048 examples)"
data=$(mktemp -d)
"$PY" -c "import sys; sys.path.insert(0, 'tests'); from tiny_data import fake_files; from pathlib import Path; fake_files(Path(sys.argv[1]), n_train=2048, n_test=512)" "$data"
for backend in torch jax; do
  for precision in fp32 bf16; do
    timeout 120 "$PY" -m common.tools.cli train --backend "$backend" --device gpu --precision "$precision" \
      --arch small --resize 56 --epochs 1 --batch-size 128 --data-dir "$data" --no-verify --no-progress \
      --out "$out/train-$backend-$precision" 2>&1 | grep -E "^(vgg train|epoch)" || echo "$backend $precision: exit ${PIPESTATUS[0]}"
  done
done

echo "== 3. the training step at 224x224, batch 64 (examples/s after 3 warm-up steps, 10 timed)"
timeout 180 "$PY" benchmarks/gpu_step.py --out "$out" --command "bash benchmarks/gpu_check.sh $out"
echo "== 4. vgg parity --device gpu (tiny arch, 32x32) in fp32 and bf16"
for precision in fp32 bf16; do
  timeout 120 "$PY" -m common.tools.cli parity --device gpu --precision "$precision" --backends torch,jax \
    --arch tiny --resize 32 --hidden 64 --batch 4 --steps 2 --out "$out/parity-gpu-$precision" 2>&1 | tail -12
done

echo "== 5. vgg predict --device gpu on a native export; vgg compare --device gpu at 224"
"$PY" -c "import sys; from common.core import arch, canonical; canonical.save_file(canonical.random_weights(arch.small(), image_size=56, hidden=64), sys.argv[1])" "$out/w.safetensors"
"$PY" -c "import sys; from PIL import Image; Image.new('L', (28, 28), 128).save(sys.argv[1])" "$out/grey.png"
timeout 120 "$PY" -m common.tools.cli export --model "$out/w.safetensors" --backend torch --arch small --resize 56 \
  --device gpu --out "$out/w.pt2" 2>&1 | tail -2 \
  && timeout 60 "$PY" -m common.tools.cli predict --model "$out/w.pt2" --device gpu "$out/grey.png" 2>&1 | tail -2
timeout 240 "$PY" -m common.tools.cli compare --device gpu --backends torch,jax --precision fp32,tf32,bf16 \
  --resize 224 --seconds 5 --rounds 1 --out "$out/compare" 2>&1 | tail -15
echo "== done; results in $out"
