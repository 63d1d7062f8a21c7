"""Fashion-MNIST batches as ``jax.Array`` (NHWC float32 images, int32 labels) from the shared loader."""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

from common.data import loader
from vgg_jax.model import LAYOUT


def to_tensor(images: np.ndarray, labels: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """On the default device; labels as int32, JAX's default integer width."""
    return jax.device_put(images), jax.device_put(labels.astype(np.int32))


load_fashion_mnist = partial(loader.load, layout=LAYOUT, to_tensor=to_tensor)
load_fashion_mnist.__doc__ = "Fashion-MNIST batches in jax.Array (NHWC); arguments as common.data.loader.load."
from_arrays = partial(loader.from_arrays, layout=LAYOUT, to_tensor=to_tensor)
