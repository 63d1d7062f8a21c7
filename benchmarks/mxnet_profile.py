"""Where MXNet spends a training step: mx.profiler's per-operator totals for the book's Gluon step or this
project's (the same steps `book_reference.py` times), small VGG, batch 128, random data.

MXNet's engine runs a hybridized graph's operators in bulk segments that the profiler reports as one entry;
bulk execution is turned off here (``MXNET_EXEC_BULK_EXEC_TRAIN=0``, before MXNet loads) so that every
operator gets its own row, which makes the step somewhat slower than when it is timed for speed.

    python benchmarks/mxnet_profile.py --code project --size 56
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from book_reference import BOOK, check_size, project  # noqa: E402  (this folder is on the path of a script run from it)

from common.runtime.machine import cores, cpu  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--code", choices=("book", "project"), default="project", help="whose training step")
    p.add_argument("--size", type=int, default=56, help="image size (default 56)")
    p.add_argument("--steps", type=int, default=20, help="profiled steps, after three warm-up steps")
    p.add_argument("--batch-size", type=int, default=128)
    a = p.parse_args()
    check_size(p, "--size", a.size)
    for option, value in (("--steps", a.steps), ("--batch-size", a.batch_size)):
        if value < 1:
            p.error(f"{option} {value}: give 1 or more")
    os.environ.setdefault("OMP_NUM_THREADS", str(cores()))
    os.environ["MXNET_EXEC_BULK_EXEC_TRAIN"] = os.environ["MXNET_EXEC_BULK_EXEC_INFERENCE"] = "0"
    step = BOOK["mxnet"](a.size, a.batch_size) if a.code == "book" else project("mxnet", a.size, a.batch_size)
    for _ in range(3):
        step()
    import mxnet as mx

    mx.profiler.set_config(profile_all=True, aggregate_stats=True, filename=os.devnull)
    mx.profiler.set_state("run")
    began = time.perf_counter()
    for _ in range(a.steps):
        step()
    mx.nd.waitall()
    seconds = time.perf_counter() - began
    mx.profiler.set_state("stop")
    print(f"mxnet {mx.__version__}, {a.code}'s step, {cpu()}, {cores()} cores, OMP_NUM_THREADS="
          f"{os.environ['OMP_NUM_THREADS']}; small VGG at {a.size}, batch {a.batch_size}: {a.steps} steps in "
          f"{seconds:.2f} s ({a.steps * a.batch_size / seconds:.1f} ex/s under the profiler)")
    table = mx.profiler.dumps(reset=True, format="table", sort_by="total", ascending=False)
    print(table[table.index("operator"):] if "operator" in table else table)


if __name__ == "__main__":
    main()
