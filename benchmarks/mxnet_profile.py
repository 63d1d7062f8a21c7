"""Where MXNet spends a training step: mx.profiler's per-operator totals for the book's Gluon step or this
project's (the same steps `book_reference.py` times), small VGG, batch 128, random data.

MXNet's engine runs a hybridized graph's operators in bulk segments that the profiler reports as one entry;
bulk execution is turned off here (``MXNET_EXEC_BULK_EXEC_TRAIN=0``, before MXNet loads) so that every
operator gets its own row, which makes the step somewhat slower than when it is timed for speed.

    python benchmarks/mxnet_profile.py --code project --size 56

The profile (``mxnet_profile.json``) and the run's record (``vgg results show``) go into ``--out`` (default
./reports for the record alone).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from book_reference import BOOK, check_size, project  # noqa: E402  (this folder is on the path of a script run from it)

from common.core import atomic  # noqa: E402
from common.runtime.machine import cores, cpu  # noqa: E402
from common.tools import records  # noqa: E402

#: a row of the profiler's operator table: name, calls, then total, min, max and average ms
OPERATOR = re.compile(r"^(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$")


def operators(table: str) -> list[dict]:
    """The operator rows of ``mx.profiler.dumps``'s table: name, calls and total ms, slowest first."""
    rows = [{"operator": m[1], "calls": int(m[2]), "total_ms": float(m[3])}
            for m in map(OPERATOR.match, table.splitlines()) if m]
    return sorted(rows, key=lambda r: -r["total_ms"])


def record(output: dict, **provenance) -> dict:
    """The mxnet-profile record of ``output`` (this script's JSON): examples/s under the profiler and each
    operator's total ms and calls over the profiled steps; ``provenance`` goes to ``records.make``."""
    labels = {"backend": "mxnet", "code": output["code"], "size": output["size"]}
    results = [records.result("train_ex_s", "ex/s", output["ex_s"], **labels)]
    for row in output["operators"]:
        results += [records.result("operator_ms", "ms", row["total_ms"], operator=row["operator"], **labels),
                    records.result("operator_calls", "calls", row["calls"], operator=row["operator"], **labels)]
    details = {k: output[k] for k in ("mxnet", "steps", "seconds", "batch_size", "omp_num_threads")}
    return records.make("mxnet-profile", results, details=details, **provenance)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--code", choices=("book", "project"), default="project", help="whose training step")
    p.add_argument("--size", type=int, default=56, help="image size (default 56)")
    p.add_argument("--steps", type=int, default=20, help="profiled steps, after three warm-up steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default=None, help="a folder for mxnet_profile.json and the record (default: the "
                                               "record alone, into ./reports)")
    a = p.parse_args()
    if a.out and (Path(a.out) / "mxnet_profile.json").exists():
        p.error(f"--out {a.out}: it holds another run's mxnet_profile.json; results are never overwritten")
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
    report = {"mxnet": mx.__version__, "code": a.code, "size": a.size, "batch_size": a.batch_size,
              "steps": a.steps, "seconds": seconds, "ex_s": a.steps * a.batch_size / seconds,
              "omp_num_threads": int(os.environ["OMP_NUM_THREADS"]), "operators": operators(table)}
    out = Path(a.out) if a.out else Path("reports")
    if a.out:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / "mxnet_profile.json", json.dumps(report, indent=1))
    print(f"mxnet_profile: wrote the record {records.write(record(report), out)}")


if __name__ == "__main__":
    main()
