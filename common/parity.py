"""Numerical parity of the backends: one set of canonical weights in, logits, gradients and short SGD
trajectories out, compared pairwise and against the NumPy oracle. Used by the tests and ``vgg parity``."""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from common import oracle
from common import weights as canonical

#: quantity -> largest allowed difference, relative to the compared values' scale
TOLERANCES = {"logits": 1e-4, "gradients": 1e-3, "trajectory": 1e-3}
ORACLE = "numpy"


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over the larger of the two magnitudes (the scale of what is compared)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-12)
    return float(np.abs(a - b).max() / scale)


def relative_tree(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """:func:`relative` per tensor, worst case over all canonical names."""
    return max(relative(a[k], b[k]) for k in a)


def to_layout(images_nchw: np.ndarray, layout: str) -> np.ndarray:
    """NCHW NumPy images in a backend's layout."""
    return np.ascontiguousarray(images_nchw if layout == "NCHW" else images_nchw.transpose(0, 2, 3, 1))


def fixed_batch(arch, image_size: int, batch: int = 4, in_channels: int = 1, num_classes: int = 10,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible NCHW batch of images in [0, 1] and labels."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, in_channels, image_size, image_size), dtype=np.float32)
    return images, rng.integers(0, num_classes, batch).astype(np.int64)


def backend_outputs(vgg: ModuleType, weights: dict[str, np.ndarray], arch, image_size: int,
                    images: np.ndarray, labels: np.ndarray) -> dict:
    """Logits, gradients and the export of ``weights`` after import, for one backend module."""
    wmod = importlib.import_module(f"{vgg.__name__}.weights")
    model = vgg.VGG(arch, image_size=image_size, in_channels=images.shape[1])
    wmod.import_weights(model, weights)
    x = to_layout(images, vgg.LAYOUT)
    return {"logits": vgg.predict(model, x), "gradients": wmod.loss_gradients(model, x, labels),
            "export": wmod.export_weights(model)}


def oracle_logits(weights: dict[str, np.ndarray], arch, images: np.ndarray) -> np.ndarray:
    return oracle.forward(weights, arch, images)


def matrix(results: dict[str, dict], quantity: str) -> dict[tuple[str, str], float]:
    """Relative difference of ``quantity`` for every ordered pair of result names."""
    diff = relative_tree if quantity == "gradients" else relative
    return {(a, b): diff(results[a][quantity], results[b][quantity])
            for a in results for b in results if a != b and quantity in results[a] and quantity in results[b]}


def format_matrix(cells: dict[tuple[str, str], float], quantity: str) -> str:
    """A Markdown table of the pairwise differences, each cell marked pass/FAIL against the tolerance."""
    names = list(dict.fromkeys([a for a, _ in cells] + [b for _, b in cells]))
    tol = TOLERANCES[quantity]
    lines = [f"{quantity} (max relative difference, tolerance {tol:g})", "",
             "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for a in names:
        row = ["—" if a == b else (f"{cells[a, b]:.1e} " + ("pass" if cells[a, b] <= tol else "FAIL"))
               for b in names]
        lines.append(f"| {a} | " + " | ".join(row) + " |")
    return "\n".join(lines)
