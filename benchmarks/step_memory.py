"""Peak memory of training steps measured the way the book's reference figures were: plain SGD (no
momentum buffers), random batches (no loader), the small VGG at batch 128. One backend per process.

    python benchmarks/step_memory.py torch      # or tf, jax, mxnet; --size 224 --steps 10 --momentum 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from book_reference import project  # noqa: E402  (this folder is on the path of a script run from it)
from common import backends  # noqa: E402
from common.compare import peak_rss_mb  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backend", choices=backends.NAMES)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--momentum", type=float, default=0.0)
    a = p.parse_args()
    step = project(a.backend, a.size, a.batch_size, momentum=a.momentum)
    for _ in range(a.steps):
        step()
    print(f"{a.backend}: {a.steps} steps at {a.size}x{a.size}, batch {a.batch_size}, momentum {a.momentum}: "
          f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
