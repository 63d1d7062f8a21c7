"""What the trust boundary costs: opening an export and classifying images in this process (``open_model``)
against in the confined child ``vgg predict`` uses (``sandbox.Sandbox``), each in a fresh interpreter,
interleaved over rounds. Per call: seconds to open (framework import included); per image: milliseconds of
a batch's forward, images sent to the child and logits read back.

    python benchmarks/boundary_cost.py --backends torch,tf,jax,mxnet --rounds 3 --out benchmarks/results/boundary-zen3

The report (``boundary-cost.json``, ``.md``) and the run's record (``vgg results show``) go into ``--out``, a new
folder; without it the record alone goes into ./reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.tools import records  # noqa: E402

MODES = ("in-process", "boundary")


def record(output: dict, **provenance) -> dict:
    """The boundary-cost record of ``output`` (this script's JSON): seconds to open and milliseconds per image
    per backend, format and where it ran, median with every round (or the range an older report kept);
    ``provenance`` goes to ``records.make``."""
    results = []
    for row in output["rows"]:
        labels = {"backend": row["backend"], "format": row["format"], "where": row["mode"]}
        for metric, unit, spread in (("open_s", "s", "open"), ("ms_per_image", "ms", "ms")):
            low, high = row[f"{spread}_range"]
            results.append(records.result(metric, unit, row[metric], samples=row.get(f"{spread}_samples"),
                                          low=low, high=high, **labels))
    details = {k: output[k] for k in ("arch", "resize", "hidden", "images", "rounds") if k in output}
    return records.make("boundary-cost", results, details=details, **provenance)


def one(path: str, mode: str, images: int) -> dict:
    """Open ``path`` in ``mode`` and classify ``images`` random images three times; seconds and ms/image."""
    start = time.perf_counter()
    import numpy as np

    from common.tools import models, sandbox
    opened = models.open_model(path) if mode == "in-process" else sandbox.open_isolated(path)
    opened_s = time.perf_counter() - start
    shape = [images, *opened.meta["input_shape"][1:]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    opened.forward(x)  # warm-up
    times = []
    for _ in range(3):
        t = time.perf_counter()
        opened.forward(x)
        times.append(time.perf_counter() - t)
    return {"open_s": opened_s, "ms_per_image": 1e3 * statistics.median(times) / images}


def _export(backend: str, fmt: str, folder: Path, arch: str, size: int, hidden: int) -> str:
    from common.core import arch as archs
    from common.serving import formats
    from common.tools import loading
    vgg = loading.backend(backend)
    blocks, batch_norm = archs.parse(arch)
    model = vgg.VGG(blocks, image_size=size, hidden=hidden, batch_norm=batch_norm)
    return str(vgg.export(model, folder / f"{backend}{formats.export_suffix(backend, fmt)}", format=fmt).path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="torch,tf,jax,mxnet")
    p.add_argument("--formats", default="native,onnx")
    p.add_argument("--arch", default="small")
    p.add_argument("--resize", type=int, default=56)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None, help="a new folder for boundary-cost.json and boundary-cost.md")
    p.add_argument("--one", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], a.images)))
        return
    out = Path(a.out) if a.out else None
    if out and out.exists():
        sys.exit(f"boundary_cost: {out} exists: results are never overwritten; choose a new --out")
    from common.core import backends as known
    from common.runtime.machine import machine
    rows = []
    with tempfile.TemporaryDirectory(prefix="vgg-boundary-") as folder:
        exports = [(b, f, _export(b, f, Path(folder), a.arch, a.resize, a.hidden))
                   for b in a.backends.split(",") for f in a.formats.split(",")]
        samples = {(b, f, m): [] for b, f, _ in exports for m in MODES}
        for _ in range(a.rounds):
            for b, f, path in exports:
                for mode in MODES:
                    proc = subprocess.run([sys.executable, __file__, "--one", path, mode, "--images", str(a.images)],
                                          capture_output=True, text=True, cwd=ROOT, check=True)
                    samples[b, f, mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for (b, f, mode), runs in samples.items():
        opens, per = [r["open_s"] for r in runs], [r["ms_per_image"] for r in runs]
        rows.append({"backend": b, "format": f, "mode": mode, "open_s": statistics.median(opens),
                     "open_range": [min(opens), max(opens)], "open_samples": opens,
                     "ms_per_image": statistics.median(per), "ms_range": [min(per), max(per)], "ms_samples": per,
                     "env": known.environment(b)})
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    report = {"machine": machine(), "commit": commit,
              "command": "python benchmarks/boundary_cost.py " + " ".join(sys.argv[1:]), "rows": rows,
              "arch": a.arch, "resize": a.resize, "hidden": a.hidden, "images": a.images, "rounds": a.rounds}
    m = report["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['date']}; commit {commit[:10]}", "",
             f"`{report['command']}` ({a.arch} at {a.resize}, hidden {a.hidden}, batches of {a.images}; median "
             f"(range) of {a.rounds} interleaved rounds, each in a fresh interpreter)", "",
             "| backend | format | where | open s | ms per image |", "|---|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['format']} | {r['mode']} | {r['open_s']:.2f} ({r['open_range'][0]:.2f}-"
              f"{r['open_range'][1]:.2f}) | {r['ms_per_image']:.3f} ({r['ms_range'][0]:.3f}-{r['ms_range'][1]:.3f}) |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.mkdir(parents=True)
        (out / "boundary-cost.json").write_text(json.dumps(report, indent=1))
        (out / "boundary-cost.md").write_text(text)
    done = records.write(record(report, command=report["command"],
                               report=str(out / "boundary-cost.md") if out else None), out or "reports")
    print(f"boundary_cost: wrote the record {done}")


if __name__ == "__main__":
    main()
