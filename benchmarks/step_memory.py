"""Peak memory of training steps measured the way the book's reference figures were: plain SGD (no
momentum buffers), random batches (no loader), the small VGG at batch 128. One backend per process.

    python benchmarks/step_memory.py torch      # or tf, jax, mxnet; --size 224 --steps 10 --momentum 0
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import arch, backends, training  # noqa: E402
from common.compare import peak_rss_mb  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backend", choices=backends.NAMES)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--momentum", type=float, default=0.0)
    a = p.parse_args()
    vgg = backends.load(a.backend)
    model = vgg.VGG(arch.small(), image_size=a.size)
    engine = importlib.import_module(f"{vgg.__name__}.trainer").Engine(
        model, training.Recipe(lr=0.01, momentum=a.momentum, batch_size=a.batch_size))
    engine.reseed(0)
    shape = (a.batch_size, 1, a.size, a.size) if vgg.LAYOUT == "NCHW" else (a.batch_size, a.size, a.size, 1)
    rng = np.random.default_rng(0)
    images, labels = vgg.data.to_tensor(rng.random(shape, dtype=np.float32),
                                        rng.integers(0, 10, a.batch_size).astype(np.int64))
    for _ in range(a.steps):
        engine.step(images, labels, 0.01)
    print(f"{a.backend}: {a.steps} steps at {a.size}x{a.size}, batch {a.batch_size}, momentum {a.momentum}: "
          f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
