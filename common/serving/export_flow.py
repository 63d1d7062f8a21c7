"""The export flow every backend shares: write into a scratch folder, reload what was written, compare it
with the live model, and only then move it into place. A failed export leaves nothing behind."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from common.core import atomic, layouts, tolerances
from common.serving import formats, onnx_files, signing

Forward = Callable[[np.ndarray], np.ndarray]


class ExportError(RuntimeError):
    """An export whose reloaded model does not match the live one."""


@dataclass(frozen=True)
class Exported:
    """What :func:`run` wrote and how it checked: the reload's largest difference from the live model
    (relative, on ``checked`` images), the size on disk and the seconds spent writing and checking."""
    path: Path
    format: str
    difference: float
    checked: int
    bytes: int
    seconds: float


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_images(model, layout: str, images: np.ndarray | None) -> np.ndarray:
    """The images to verify on: those given, or a fixed random batch in ``layout``."""
    if images is None:
        nchw, _ = tolerances.fixed_batch(model.arch, model.image_size, batch=4, in_channels=model.in_channels)
        images = layouts.images_from_nchw(nchw, layout)
    return np.asarray(images, np.float32)


def float32_master(model, build: Callable, export_weights: Callable, import_weights: Callable):
    """``model`` itself in fp32, else a float32 twin built from its master weights: an export holds float32
    whatever precision the model trains in (``--precision`` never changes a file format)."""
    if model.config.precision == "fp32":
        return model
    twin = build(replace(model.config, precision="fp32"))
    import_weights(twin, export_weights(model))
    return twin


def run(model, path: str | Path, fmt: str, backend: str, layout: str,
        writers: Mapping[str, Callable[[Path, dict], None]], reload_native: Callable[[Path], Forward], live: Forward,
        images: np.ndarray | None = None) -> Exported:
    """Export ``model`` to ``path`` in ``fmt`` with ``writers[fmt](tmp, metadata)``, reload it (ONNX in ONNX
    Runtime, native with ``reload_native``) and refuse it (ExportError, nothing written) if its logits on
    ``images`` differ from ``live``'s by more than :data:`formats.TOLERANCE`."""
    path = formats.check_export_path(path, backend, fmt)
    write = writers[fmt]
    reload = onnx_files.runner if fmt == "onnx" else reload_native
    images = check_images(model, layout, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp = scratch / path.name
        meta = formats.metadata(model, backend, layout, fmt)
        write(tmp, meta)
        if fmt == "onnx":
            onnx_files.finish(tmp, meta)
        else:  # a native export is a program: it loads later (and in the check below) because this user wrote it
            signing.sign(tmp)
        want = live(images)
        got = reload(tmp)(images)
        difference = tolerances.relative(got, want)
        if not difference <= formats.TOLERANCE:  # also refuses NaN
            raise ExportError(f"{path}: the reloaded {fmt} export differs from the live model by {difference:.1e} "
                              f"(relative; allowed {formats.TOLERANCE:g}); nothing was written")
        size = size_of(tmp)
        atomic.publish(tmp, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Exported(path, fmt, difference, len(images), size, time.perf_counter() - start)
