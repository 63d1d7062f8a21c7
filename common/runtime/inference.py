"""Batched inference on NumPy images, shared by every backend's ``predict``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from common.core.summary import check_input_shape


def check_images(model, images: np.ndarray, layout: str) -> np.ndarray:
    """``images`` as float32, after checking dtype and shape against ``model`` in ``layout``."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be float32 in [0, 1], got dtype {images.dtype}")
    check_input_shape(images.shape, layout, model.in_channels, model.image_size)
    return images.astype(np.float32, copy=False)


def predict_batches(model, images: np.ndarray, layout: str, forward: Callable[[np.ndarray], ArrayLike],
                    batch_size: int = 256) -> np.ndarray:
    """Check ``images`` against ``model`` (shape in ``layout``), run ``forward`` per batch, stack the logits."""
    images = check_images(model, images, layout)
    return np.concatenate([np.asarray(forward(np.ascontiguousarray(images[i:i + batch_size])))
                           for i in range(0, len(images), batch_size)])
