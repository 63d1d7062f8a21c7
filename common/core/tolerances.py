"""How the backends' outputs are compared: the tolerances, the relative error they bound, and the fixed
batch they are compared on. Used by the parity tools and by every export's reload check."""

from __future__ import annotations

import numpy as np

#: quantity -> largest allowed difference, relative to the compared values' scale. With batch norm the
#: logits and gradients are compared in eval mode (running statistics) and in training mode (the batch's),
#: and the running statistics after a training forward and after the SGD steps, with the same tolerances.
TOLERANCES = {"logits": 1e-4, "gradients": 1e-3, "trajectory": 1e-3}
TOLERANCES.update({"train logits": TOLERANCES["logits"], "train gradients": TOLERANCES["gradients"],
                   "running statistics": TOLERANCES["logits"], "statistics after steps": TOLERANCES["logits"]})


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over the larger of the two magnitudes (the scale of what is compared)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-12)
    return float(np.abs(a - b).max() / scale)


def relative_tree(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """:func:`relative` per tensor, worst case over all canonical names."""
    return max(relative(a[k], b[k]) for k in a)


def fixed_batch(arch, image_size: int, batch: int = 4, in_channels: int = 1, num_classes: int = 10,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible NCHW batch of images in [0, 1] and labels."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, in_channels, image_size, image_size), dtype=np.float32)
    return images, rng.integers(0, num_classes, batch).astype(np.int64)


def relative_l2(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """||a - b|| over the larger of ||a|| and ||b||, every tensor of the two trees as one vector: the gradient
    measure of reduced precision, where a ReLU or max-pool choice that rounding flips moves one element a lot
    and the whole little."""
    diff = sum(float(np.sum((np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)) ** 2)) for k in a)
    size = max(sum(float(np.sum(np.asarray(t[k], np.float64) ** 2)) for k in a) for t in (a, b))
    return float(np.sqrt(diff / max(size, 1e-24)))
