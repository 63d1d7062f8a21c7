"""Loader throughput: images/s of each backend's Fashion-MNIST batches (batch 128) at 224, 96 and 56 pixels.

Each backend runs in its own subprocess pinned to one core (``sched_setaffinity``, one BLAS thread), so the
figures are what the loader costs a trainer on a single core, and its peak RSS is its own.

    python benchmarks/loader_throughput.py [--backends torch,tf,jax,mxnet] [--sizes 224,96,56] [--out FOLDER]

The figures (``loader_throughput.json``) and the run's record (``vgg results show``) go into ``--out``, a
folder (default ./reports), never over another run's file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common.core import atomic
from common.tools import loading, records

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {224: 5000, 56: 20000}  # images/s on one core (issue 3)


def measure(backend: str, sizes: list[int], batch_size: int, seconds: float) -> dict:
    """Run inside the pinned subprocess: iterate training batches for ``seconds`` per size."""
    sys.path.insert(0, str(ROOT))

    from common.runtime.machine import peak_rss_mb

    vgg = loading.backend(backend)
    rss_before = peak_rss_mb()
    rows = []
    for size in sizes:
        data = vgg.load_fashion_mnist(batch_size, resize=size)
        it = (batch for k in itertools.count() for batch in data.train.epoch(k))
        next(it)  # start the prefetch thread and the framework's first conversion
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            images, labels = next(it)
            count += int(labels.shape[0])
        rows.append({"size": size, "images_per_sec": count / (time.perf_counter() - began)})
    return {"backend": backend, "rows": rows, "rss_after_import_mb": rss_before, "peak_rss_mb": peak_rss_mb()}


def record(output: dict, **provenance) -> dict:
    """The loader-throughput record of ``output`` (this script's JSON): images/s per backend and size, and each
    backend's RSS after its import and at its peak; ``provenance`` goes to ``records.make``."""
    results = []
    for entry in output["results"]:
        backend = entry["backend"]
        results += [records.result("loader_images_s", "images/s", row["images_per_sec"], backend=backend,
                                   size=row["size"]) for row in entry["rows"]]
        results += [records.result("import_rss_mb", "MB", entry["rss_after_import_mb"], backend=backend),
                    records.result("peak_rss_mb", "MB", entry["peak_rss_mb"], backend=backend)]
    details = {"batch_size": output["batch_size"], "one_core": output["one_core"]}
    return records.make("loader-throughput", results, details=details, **provenance)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="torch,tf,jax,mxnet")
    p.add_argument("--sizes", default="224,96,56")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per backend and size")
    p.add_argument("--out", default="reports", help="folder for loader_throughput.json and the record")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    target = Path(args.out) / "loader_throughput.json"
    if not args.child and target.exists():
        p.error(f"--out {args.out}: it holds another run's loader_throughput.json; choose a new folder")
    if args.child:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        print(json.dumps(measure(args.child, sizes, args.batch_size, args.seconds)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results = []
    print(f"{'backend':8} " + " ".join(f"{f'img/s @{s}':>13}" for s in sizes) + f" {'peak RSS':>9}")
    for backend in args.backends.split(","):
        proc = subprocess.run([sys.executable, __file__, "--child", backend, "--sizes", args.sizes,
                               "--batch-size", str(args.batch_size), "--seconds", str(args.seconds)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{backend:8} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{backend:8} " + " ".join(f"{r['images_per_sec']:13,.0f}" for r in result["rows"])
              + f" {result['peak_rss_mb']:7.0f}MB")
    print("targets (one core): " + ", ".join(f">= {v:,} img/s @{k}" for k, v in TARGETS.items()))
    report = {"batch_size": args.batch_size, "one_core": True, "results": results}
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(target, json.dumps(report, indent=1))
    print(f"wrote {target}")
    if results:
        print(f"wrote the record {records.write(record(report, report=str(target)), args.out)}")


if __name__ == "__main__":
    main()
