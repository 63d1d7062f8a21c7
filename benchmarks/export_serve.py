r"""Export models trained by ``vgg train`` in both formats and serve them: export time and size, load time,
inference speed (batch 64, median of 3 passes) and test accuracy of the live model, the native export
and the ONNX file (in ONNX Runtime). One model per child process, so each gets a fresh interpreter.

    python benchmarks/export_serve.py runs/torch/model.pt runs/tf/model.weights.h5 ... \
        --out benchmarks/results/export-serve
    python benchmarks/export_serve.py w.safetensors --arch small --resize 56   # one set of weights in every backend

The report (``export-serve.json``, ``.md``) and the run's record (``vgg results show``) go into ``--out``;
without it the record alone goes into ./reports.
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
import numpy as np  # noqa: E402

from common.core import arch as vgg_arch, backends, layouts  # noqa: E402
from common.core.config import ModelConfig  # noqa: E402
from common.data import batches, fashion_mnist  # noqa: E402
from common.runtime.machine import machine  # noqa: E402
from common.serving import formats  # noqa: E402
from common.tools import models, records  # noqa: E402

#: what each served form's figures are, as the record names them: (metric, unit, key in the report's row)
FIGURES = (("export_s", "s", "export_s"), ("size_mb", "MB", "mb"), ("load_s", "s", "load_s"),
           ("max_abs_diff", "abs", "difference"), ("test_acc", "fraction", "accuracy"),
           ("same_top1_as_live", "images", "same_top1_as_live"))


def measure(model_file: str, count: int, batch: int, backend: str | None, arch: str | None,
            resize: int | None) -> dict:
    config = None
    if arch is not None:  # a canonical .safetensors: the model it was made for
        blocks, batch_norm = vgg_arch.parse(arch)
        config = ModelConfig(blocks, image_size=resize or 224, batch_norm=batch_norm)
    vgg, model = models.live(model_file, backend, config)
    backend = vgg.__name__.removeprefix("vgg_")
    images, labels = fashion_mnist.load_split("test")
    x = layouts.with_channels(batches.to_float(images[:count], model.image_size), vgg.LAYOUT)
    y = labels[:count]
    row = {"backend": backend, "model": model_file, "arch": [list(b) for b in model.arch],
           "image_size": model.image_size, "images": count, "batch": batch, "env": backends.environment(backend)}
    with tempfile.TemporaryDirectory(prefix="vgg-export-serve-") as folder:
        served = {"live": lambda a: vgg.predict(model, a)}
        for fmt in formats.FORMATS:
            done = vgg.export(model, Path(folder) / f"model{formats.export_suffix(backend, fmt)}", format=fmt,
                              images=x[:64])
            start = time.perf_counter()
            opened = models.open_model(done.path)
            row[fmt] = {"export_s": done.seconds, "mb": done.bytes / 1e6, "load_s": time.perf_counter() - start,
                        "difference": done.difference}
            served[fmt] = opened.forward
        for name, forward in served.items():
            forward(x[:batch])  # warm-up: first-call compilation is not serving speed
            times, logits = [], None
            for _ in range(3):
                start = time.perf_counter()
                logits = [forward(x[i:i + batch]) for i in range(0, count, batch)]
                times.append(time.perf_counter() - start)
            top1 = np.concatenate(logits).argmax(1)
            row.setdefault(name, {}).update(images_per_s=count / statistics.median(times),
                                            spread=[count / max(times), count / min(times)],
                                            accuracy=float((top1 == y).mean()), top1=top1.tolist())
    for name in formats.FORMATS:
        row[name]["same_top1_as_live"] = sum(a == b for a, b in zip(row[name]["top1"], row["live"]["top1"]))
    for name in ("live", *formats.FORMATS):
        del row[name]["top1"]
    return row


def table(rows: list[dict]) -> str:
    lines = ["| backend | format | export s | size MB | load s | images/s (range) | accuracy | same top-1 as live |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        live = r["live"]
        lines.append(f"| {r['backend']} | live model | | | | {live['images_per_s']:.0f} ({live['spread'][0]:.0f}-"
                     f"{live['spread'][1]:.0f}) | {live['accuracy']:.4f} | |")
        for fmt in formats.FORMATS:
            f = r[fmt]
            name = formats.export_suffix(r["backend"], fmt) + (" (ONNX Runtime)" if fmt == "onnx" else "")
            lines.append(f"| {r['backend']} | {name} | {f['export_s']:.1f} | {f['mb']:.1f} | {f['load_s']:.1f} | "
                         f"{f['images_per_s']:.0f} ({f['spread'][0]:.0f}-{f['spread'][1]:.0f}) | {f['accuracy']:.4f} | "
                         f"{f['same_top1_as_live']}/{r['images']} |")
    return "\n".join(lines)


def record(output: dict, **provenance) -> dict:
    """The export-serve record of ``output`` (this script's JSON): per backend and served form (the live
    model, the native export, the ONNX file) images/s with its range, accuracy, and for the files the
    export's seconds, size, load seconds, difference from the live model and top-1 agreement; ``provenance``
    goes to ``records.make``."""
    results = []
    for row in output["rows"]:
        for served in ("live", *formats.FORMATS):
            figures = row[served]
            labels = {"backend": row["backend"], "served": served}
            low, high = figures["spread"]
            results.append(records.result("infer_ex_s", "ex/s", figures["images_per_s"], low=low, high=high,
                                          **labels))
            results += [records.result(metric, unit, figures[key], **labels)
                        for metric, unit, key in FIGURES if key in figures]
    first = output["rows"][0] if output["rows"] else {}
    details = {k: first.get(k) for k in ("model", "arch", "image_size", "images", "batch")}
    return records.make("export-serve", results, details=details, **provenance)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="model files written by vgg train")
    p.add_argument("--images", type=int, default=2000, help="test images to classify")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default=None, help="folder for export-serve.json and export-serve.md")
    p.add_argument("--backends", default=",".join(backends.NAMES),
                   help="for a .safetensors model: backends to load it in")
    p.add_argument("--arch", default=None, help="for a .safetensors model")
    p.add_argument("--resize", type=int, default=None, help="for a .safetensors model")
    p.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if not a.child and a.out and (Path(a.out) / "export-serve.json").exists():
        p.error(f"--out {a.out}: it holds another run's export-serve.json; results are never overwritten")
    if a.child:
        print(json.dumps(measure(a.models[0], a.images, a.batch, a.backend, a.arch, a.resize)))
        return
    rows = []
    jobs = []
    for m in a.models:
        if m.endswith(formats.WEIGHTS):
            jobs += [(m, ["--backend", b, "--arch", a.arch or "small", "--resize", str(a.resize or 224)])
                     for b in a.backends.split(",")]
        else:
            jobs.append((m, []))
    for model_file, extra in jobs:
        print(f"export_serve: {model_file} {' '.join(extra)}...", file=sys.stderr)
        proc = subprocess.run([sys.executable, __file__, model_file, "--child", "--images", str(a.images),
                               "--batch", str(a.batch), *extra], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            sys.exit(f"export_serve: {model_file} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report = {"machine": machine(), "command": "python benchmarks/export_serve.py " + " ".join(sys.argv[1:]),
              "rows": rows}
    text = (f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, {report['machine']['date']}\n\n"
            f"Command: `{report['command']}`\n\n{table(rows)}\n")
    print(text)
    out = Path(a.out) if a.out else Path("reports")
    if a.out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "export-serve.json").write_text(json.dumps(report, indent=1))
        (out / "export-serve.md").write_text(text)
    done = records.write(record(report, command=report["command"],
                                report=str(out / "export-serve.md") if a.out else None), out)
    print(f"export_serve: wrote the record {done}", file=sys.stderr)


if __name__ == "__main__":
    main()
