"""Training-set augmentation as torchvision users know it: a random crop of the zero-padded image
(``RandomCrop(28, padding=p)``) and a horizontal flip with probability 1/2 (``RandomHorizontalFlip``).

It runs once, in the shared loader, on the uint8 originals before resizing, so every backend trains on the
same pixels for a seed. The draws of epoch ``k`` are one array per example, a function of ``(seed, k)``
alone: a resumed run, another batch size or another worker count sees the same crop of each example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the padding torchvision's Fashion-MNIST and CIFAR recipes use relative to the image (4 of 32 pixels)
DEFAULT_PADDING = 2


@dataclass(frozen=True)
class Augmentation:
    """Random crop of the image padded by ``padding`` zero pixels per side (0: none), and a horizontal flip
    of half the images when ``flip``."""

    padding: int = DEFAULT_PADDING
    flip: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) or not 0 <= self.padding <= 8:
            raise ValueError(f"padding={self.padding!r} is not allowed: it must be an integer from 0 to 8")

    @property
    def active(self) -> bool:
        return self.padding > 0 or self.flip

    def draws(self, seed: int, epoch: int, count: int) -> Draws:
        """Every example's crop offsets and flip for ``epoch``: a function of ``(seed, epoch)`` only."""
        rng = np.random.default_rng([seed, epoch, 0xA06])  # a stream apart from the shuffling's
        offsets = rng.integers(0, 2 * self.padding + 1, size=(count, 2))
        flips = rng.random(count) < 0.5 if self.flip else np.zeros(count, bool)
        return Draws(offsets[:, 0], offsets[:, 1], flips, self.padding)


@dataclass(frozen=True)
class Draws:
    """One epoch's draws, by example index: row and column offset into the padded image, and the flip."""

    rows: np.ndarray
    cols: np.ndarray
    flips: np.ndarray
    padding: int

    def apply(self, images: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W) ``images`` of examples ``indices``, cropped and flipped as drawn for them."""
        n, h, w = images.shape
        p = self.padding
        padded = np.pad(images, ((0, 0), (p, p), (p, p))) if p else images
        rows = self.rows[indices][:, None] + np.arange(h)  # (B, H) rows of the padded image
        cols = self.cols[indices][:, None] + np.arange(w)
        cols = np.where(self.flips[indices][:, None], cols[:, ::-1], cols)  # a flip reads the columns backwards
        return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


__all__ = ["DEFAULT_PADDING", "Augmentation", "Draws"]
