"""``vgg parity --onnx``: one set of canonical weights exported to ONNX by every backend, the files run in
ONNX Runtime on the same images (each in its backend's layout), compared pairwise and with the oracle."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from common.core import canonical, layouts, tolerances
from common.core.config import ModelConfig
from common.runtime.contract import Backend
from common.serving import formats, onnx_files
from common.tools import parity


def run(modules: dict[str, Backend], config: ModelConfig, batch: int = 8, out: str | Path | None = None,
        log: Callable[[str], None] = lambda _: None) -> dict[tuple[str, str], float]:
    """Relative logit differences for every ordered pair of the ONNX files and the NumPy oracle, for the model
    ``config`` describes (its seed seeds weights and images); the files go to ``out`` (kept) or a temporary
    folder (removed)."""
    weights = canonical.random_weights(config)
    images, _ = tolerances.fixed_batch(config.arch, config.image_size, batch, config.in_channels,
                                       config.num_classes, config.seed)
    results = {parity.ORACLE: {"logits": parity.oracle_logits(weights, config.arch, images, config.batch_norm)}}
    with tempfile.TemporaryDirectory(prefix="vgg-parity-onnx-") as scratch:
        folder = Path(out or scratch)
        for name, vgg in modules.items():
            model = vgg.VGG(config)
            vgg.import_weights(model, weights)
            path = folder / f"{name}{formats.ONNX}"
            exported = vgg.export(model, path, format="onnx")
            log(f"parity: {name} wrote {path if out else path.name + ' (temporary; --out keeps the files)'} "
                f"({exported.bytes / 1e6:.1f} MB, {exported.seconds:.1f} s)")
            results[f"{name}.onnx"] = {"logits": onnx_files.runner(path)(layouts.images_from_nchw(images, vgg.LAYOUT))}
    return parity.matrix(results, "logits")
