"""One full epoch of real Fashion-MNIST at 224x224 through a backend's loader, with its time and peak memory.

    python benchmarks/epoch_224.py torch [--data-dir DIR] [--out FOLDER]

The run's record (``vgg results show``) goes into ``--out`` (default ./reports).
"""

from __future__ import annotations

import argparse
import time

from common.core import backends
from common.runtime.machine import peak_rss_mb
from common.tools import loading, records

SIZE = 224


def epoch(backend: str, data_dir: str | None) -> dict:
    """One epoch of training batches at 224x224: images, seconds, peak RSS, and the batches' type and shape."""
    vgg = loading.backend(backend)
    data = vgg.load_fashion_mnist(128, resize=SIZE, data_dir=data_dir)
    began, n = time.perf_counter(), 0
    for batch in data.train:
        n += int(batch[1].shape[0])
    images = batch[0]  # the last batch's, whose type and shape are reported
    return {"backend": backend, "size": SIZE, "images": n, "seconds": time.perf_counter() - began,
            "peak_rss_mb": peak_rss_mb(), "batch_type": f"{type(images).__module__}.{type(images).__name__}",
            "batch_shape": list(images.shape)}


def record(output: dict, **provenance) -> dict:
    """The loader-epoch record of ``output`` (``epoch``'s dict): the epoch's seconds and the peak RSS."""
    labels = {"backend": output["backend"], "size": output["size"]}
    results = [records.result("epoch_s", "s", output["seconds"], **labels),
               records.result("peak_rss_mb", "MB", output["peak_rss_mb"], **labels)]
    details = {k: output[k] for k in ("images", "batch_type", "batch_shape")}
    return records.make("loader-epoch", results, details=details, **provenance)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backend", choices=backends.NAMES)
    p.add_argument("--data-dir", default=None, help="the Fashion-MNIST files (default: the loader's own)")
    p.add_argument("--out", default="reports", help="the folder for the record (default ./reports)")
    a = p.parse_args()
    report = epoch(a.backend, a.data_dir)
    print(f"{a.backend}: one epoch of {report['images']} images at {SIZE}x{SIZE} as {report['batch_type']} "
          f"{tuple(report['batch_shape'])} in {report['seconds']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB")
    print(f"epoch_224: wrote the record {records.write(record(report), a.out)}")


if __name__ == "__main__":
    main()
