"""``vgg parity --onnx``: one set of canonical weights exported to ONNX by every backend, the files run in
ONNX Runtime on the same images (each in its backend's layout), compared pairwise and with the oracle."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import ModuleType

from common.core import canonical, layouts, tolerances
from common.core.arch import HIDDEN
from common.serving import formats, onnx_files
from common.tools import parity


def run(modules: dict[str, ModuleType], arch, image_size: int, batch: int = 8, seed: int = 0,
        out: str | Path | None = None, log=lambda _: None, batch_norm: bool = False,
        hidden: int = HIDDEN) -> dict[tuple[str, str], float]:
    """Relative logit differences for every ordered pair of the ONNX files and the NumPy oracle; the files
    go to ``out`` (kept) or a temporary folder (removed)."""
    weights = canonical.random_weights(arch, image_size=image_size, seed=seed, batch_norm=batch_norm, hidden=hidden)
    images, _ = tolerances.fixed_batch(arch, image_size, batch, seed=seed)
    results = {parity.ORACLE: {"logits": parity.oracle_logits(weights, arch, images, batch_norm)}}
    with tempfile.TemporaryDirectory(prefix="vgg-parity-onnx-") as scratch:
        folder = Path(out or scratch)
        for name, vgg in modules.items():
            model = vgg.VGG(arch, image_size=image_size, batch_norm=batch_norm, hidden=hidden)
            vgg.import_weights(model, weights)
            path = folder / f"{name}{formats.ONNX}"
            exported = vgg.export(model, path, format="onnx")
            log(f"parity: {name} wrote {path if out else path.name + ' (temporary; --out keeps the files)'} "
                f"({exported.bytes / 1e6:.1f} MB, {exported.seconds:.1f} s)")
            results[f"{name}.onnx"] = {"logits": onnx_files.runner(path)(layouts.images_from_nchw(images, vgg.LAYOUT))}
    return parity.matrix(results, "logits")
