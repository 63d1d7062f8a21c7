"""Where the installed JAX spends a training step on CPU: the small VGG's convolutions (forward, input
gradient, weight gradient) and its dense layers' products, each timed alone, with NumPy's product beside.

Run it under two JAX versions to see what an upgrade changes (e.g. `.venv/bin/python` and
`.venv-modern/bin/python`); NHWC, float32, median of ``--repeats`` calls after one warm-up call.

    python benchmarks/jax_kernels.py --size 224 --batch-size 32

The times (``jax_kernels.json``) and the run's record (``vgg results show``) go into ``--out`` (default
./reports for the record alone).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from book_reference import check_size  # noqa: E402  (this folder is on the path of a script run from it)

from common.core import arch, atomic  # noqa: E402
from common.runtime.machine import cpu  # noqa: E402
from common.tools import records  # noqa: E402

#: a convolution's three timed parts: (key in the report, the table's column)
PARTS = (("forward_ms", "forward ms"), ("input_grad_ms", "input gradient ms"),
         ("weight_grad_ms", "weight gradient ms"))


def median_ms(f, repeats: int) -> float:
    import jax

    jax.block_until_ready(f())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def convolutions(size: int, batch: int, repeats: int) -> list[dict]:
    """Each convolution of the small VGG at ``size``: forward, input-gradient and weight-gradient ms."""
    import jax
    from jax import lax

    dn = ("NHWC", "HWIO", "NHWC")
    conv = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn))
    key, channels, rows = jax.random.PRNGKey(0), 1, []
    for num_convs, out in arch.small():
        for _ in range(num_convs):
            x = jax.random.normal(key, (batch, size, size, channels))
            w = jax.random.normal(key, (3, 3, channels, out)) * 0.1
            g = jax.random.normal(key, (batch, size, size, out))
            forward = jax.jit(lambda x, w, g: conv(x, w))
            dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g))
            dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g))
            times = [median_ms(partial(f, x, w, g), repeats) for f in (forward, dx, dw)]
            rows.append({"layer": f"conv {size}x{size} {channels}->{out}",
                         **{key: t for (key, _), t in zip(PARTS, times)}})
            channels = out
        size //= 2
    return rows


def products(size: int, batch: int, repeats: int) -> list[dict]:
    """The dense layers' products (and a 4096-cube for scale): JAX's and NumPy's GFLOP/s."""
    import jax
    import jax.numpy as jnp

    for _ in arch.small():
        size //= 2
    flat = arch.small()[-1][1] * size * size
    rng, matmul, rows = np.random.default_rng(0), jax.jit(jnp.matmul), []
    for m, k, n in ((batch, flat, arch.HIDDEN), (batch, arch.HIDDEN, arch.HIDDEN), (arch.HIDDEN, batch, arch.HIDDEN),
                    (4096, 4096, 4096)):
        left, right = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
        jl, jr = jnp.asarray(left), jnp.asarray(right)
        gflop = 2 * m * k * n / 1e6  # per ms
        rows.append({"m": m, "k": k, "n": n, "jax_gflop_s": gflop / median_ms(partial(matmul, jl, jr), repeats),
                     "numpy_gflop_s": gflop / median_ms(partial(np.matmul, left, right), repeats)})
    return rows


def text(report: dict) -> str:
    """The report as Markdown: the header line, the convolutions' table and the products' table."""
    lines = [f"jax {report['jax']}, {report['cpu']}; small VGG at {report['size']}, batch {report['batch_size']}; "
             f"median of {report['repeats']}",
             "| layer | " + " | ".join(c for _, c in PARTS) + " |", "|---|---|---|---|"]
    lines += [f"| {r['layer']} | " + " | ".join(f"{r[k]:.1f}" for k, _ in PARTS) + " |" for r in report["convolutions"]]
    lines += ["", "| product (m x k x n) | JAX GFLOP/s | NumPy GFLOP/s |", "|---|---|---|"]
    lines += [f"| {r['m']} x {r['k']} x {r['n']} | {r['jax_gflop_s']:.0f} | {r['numpy_gflop_s']:.0f} |"
              for r in report["products"]]
    return "\n".join(lines)


def record(output: dict, **provenance) -> dict:
    """The jax-kernels record of ``output`` (this script's JSON): each convolution's forward, input-gradient
    and weight-gradient ms (``layer`` and its position ``index``, two layers share a shape), and each
    product's GFLOP/s in JAX and in NumPy; ``provenance`` goes to ``records.make``."""
    results = [records.result(key, "ms", row[key], backend="jax", layer=row["layer"], index=i)
               for i, row in enumerate(output["convolutions"], 1) for key, _ in PARTS]
    results += [records.result("matmul_gflop_s", "GFLOP/s", row[f"{library}_gflop_s"], library=library,
                               m=row["m"], k=row["k"], n=row["n"])
                for row in output["products"] for library in ("jax", "numpy")]
    details = {k: output[k] for k in ("jax", "size", "batch_size", "repeats")}
    return records.make("jax-kernels", results, details=details, **provenance)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=56, help="image size (default 56)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="a folder for jax_kernels.json and the record (default: the "
                                               "record alone, into ./reports)")
    a = p.parse_args()
    check_size(p, "--size", a.size)
    if a.batch_size < 1 or a.repeats < 1:
        p.error("--batch-size and --repeats must be at least 1")
    if a.out and (Path(a.out) / "jax_kernels.json").exists():
        p.error(f"--out {a.out}: it holds another run's jax_kernels.json; results are never overwritten")
    import jax

    report = {"jax": jax.__version__, "cpu": cpu(), "size": a.size, "batch_size": a.batch_size,
              "repeats": a.repeats, "convolutions": convolutions(a.size, a.batch_size, a.repeats),
              "products": products(a.size, a.batch_size, a.repeats)}
    print(text(report))
    out = Path(a.out) if a.out else Path("reports")
    if a.out:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / "jax_kernels.json", json.dumps(report, indent=1))
    print(f"jax_kernels: wrote the record {records.write(record(report), out)}")


if __name__ == "__main__":
    main()
