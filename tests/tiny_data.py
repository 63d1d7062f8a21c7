"""Made-up Fashion-MNIST-shaped data for the tests (IDX files on disk and easily learnable arrays), and the
narrow classifier head of the tests' tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data import idx

#: the width of the test models' hidden dense layers: the paper's 4096 would make every tiny model 21 M
#: parameters, and the suite's time would go to the head (tests/test_model.py checks the 4096-wide one)
HIDDEN = 64


def fake_files(folder: Path, n_train: int = 40, n_test: int = 12, compress: bool = True, seed: int = 0) -> dict:
    """Write four small made-up IDX files (gz or raw) into ``folder``; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        idx.write(folder / (f"{name}.gz" if compress else name), array)
    return arrays


def learnable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is a bright 7x7 square at one of ten places, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 5)
        images[i, 3 + 12 * r:10 + 12 * r, 1 + 5 * c:8 + 5 * c] = 250
    return images, labels
