"""Fashion-MNIST as train/test :class:`~common.data.batches.Batches`, the one loader behind every backend's
``load_fashion_mnist``; a backend only says which layout and tensor type it wants."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.data import fashion_mnist
from common.data.augment import Augmentation
from common.data.batches import Batches, ToTensor


@dataclass(frozen=True)
class FashionMNIST:
    """Train and test batches plus the class names; unpacks as ``train, test = data``."""

    train: Batches
    test: Batches
    classes: tuple[str, ...] = fashion_mnist.CLASSES

    def __iter__(self):
        return iter((self.train, self.test))


def from_arrays(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                test_labels: np.ndarray, batch_size: int, resize: int | None = None, *, layout: str = "NCHW",
                seed: int = 0, drop_last: bool = False, limit: int | None = None, eval_limit: int | None = None,
                to_tensor: ToTensor | None = None, prefetch: int = 2,
                augment: Augmentation | bool | None = None) -> FashionMNIST:
    """Batches over uint8 (N, 28, 28) arrays: the training split shuffled by ``seed`` and cropped and flipped
    as ``augment`` says (True: a random crop of the image padded by 2 pixels and a horizontal flip), the test
    split in order; ``limit`` and ``eval_limit`` keep only the first examples of each (a quick run)."""
    for name, value in (("limit", limit), ("eval_limit", eval_limit)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name}={value!r} is not allowed: it must be a positive integer or None")
    if limit is not None:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
    if eval_limit is not None:
        test_images, test_labels = test_images[:eval_limit], test_labels[:eval_limit]
    common: dict[str, Any] = dict(batch_size=batch_size, resize=resize, layout=layout, to_tensor=to_tensor,
                                  prefetch=prefetch)
    return FashionMNIST(
        train=Batches(train_images, train_labels, shuffle=True, seed=seed, drop_last=drop_last,
                      **common).augmented(augment),
        test=Batches(test_images, test_labels, **common))


def load(batch_size: int, resize: int | None = None, *, data_dir: str | Path | None = None,
         download: bool = True, verify: bool = True, layout: str = "NCHW", seed: int = 0, drop_last: bool = False,
         limit: int | None = None, eval_limit: int | None = None, to_tensor: ToTensor | None = None,
         prefetch: int = 2, augment: Augmentation | bool | None = None) -> FashionMNIST:
    """Find (or download), verify and read the four files, then batch them as :func:`from_arrays` does.

    ``verify=False`` accepts IDX files that are not Fashion-MNIST's (your own data in the same format).
    """
    arrays = fashion_mnist.load_arrays(data_dir, download=download, verify=verify)
    return from_arrays(*arrays, batch_size, resize, layout=layout, seed=seed, drop_last=drop_last, limit=limit,
                       eval_limit=eval_limit, to_tensor=to_tensor, prefetch=prefetch, augment=augment)
