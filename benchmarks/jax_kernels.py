"""Where the installed JAX spends a training step on CPU: the small VGG's convolutions (forward, input
gradient, weight gradient) and its dense layers' products, each timed alone, with NumPy's product beside.

Run it under two JAX versions to see what an upgrade changes (e.g. `.venv/bin/python` and
`.venv-modern/bin/python`); NHWC, float32, median of ``--repeats`` calls after one warm-up call.

    python benchmarks/jax_kernels.py --size 224 --batch-size 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from book_reference import check_size  # noqa: E402  (this folder is on the path of a script run from it)

from common.core import arch  # noqa: E402
from common.runtime.machine import cpu  # noqa: E402


def median_ms(f, repeats: int) -> float:
    import jax

    jax.block_until_ready(f())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=56, help="image size (default 56)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    check_size(p, "--size", a.size)
    if a.batch_size < 1 or a.repeats < 1:
        p.error("--batch-size and --repeats must be at least 1")
    import jax
    import jax.numpy as jnp
    from jax import lax

    dn = ("NHWC", "HWIO", "NHWC")
    conv = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn))
    print(f"jax {jax.__version__}, {cpu()}; small VGG at {a.size}, batch {a.batch_size}; median of {a.repeats}")
    print("| layer | forward ms | input gradient ms | weight gradient ms |\n|---|---|---|---|")
    key, size, channels = jax.random.PRNGKey(0), a.size, 1
    for num_convs, out in arch.small():
        for _ in range(num_convs):
            x = jax.random.normal(key, (a.batch_size, size, size, channels))
            w = jax.random.normal(key, (3, 3, channels, out)) * 0.1
            g = jax.random.normal(key, (a.batch_size, size, size, out))
            forward = jax.jit(lambda x, w, g: conv(x, w))
            dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g))
            dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g))
            times = [median_ms(lambda f=f: f(x, w, g), a.repeats) for f in (forward, dx, dw)]
            print(f"| conv {size}x{size} {channels}->{out} | " + " | ".join(f"{t:.1f}" for t in times) + " |")
            channels = out
        size //= 2
    print("\n| product (m x k x n) | JAX GFLOP/s | NumPy GFLOP/s |\n|---|---|---|")
    flat = channels * size * size
    rng = np.random.default_rng(0)
    matmul = jax.jit(jnp.matmul)
    for m, k, n in ((a.batch_size, flat, arch.HIDDEN), (a.batch_size, arch.HIDDEN, arch.HIDDEN),
                    (arch.HIDDEN, a.batch_size, arch.HIDDEN), (4096, 4096, 4096)):
        left, right = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
        jl, jr = jnp.asarray(left), jnp.asarray(right)
        gflop = 2 * m * k * n / 1e6  # per ms
        print(f"| {m} x {k} x {n} | {gflop / median_ms(lambda: matmul(jl, jr), a.repeats):.0f} | "
              f"{gflop / median_ms(lambda: left @ right, a.repeats):.0f} |")


if __name__ == "__main__":
    main()
