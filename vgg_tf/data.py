"""Fashion-MNIST batches as ``tf.Tensor`` (NHWC float32 images, int64 labels) from the shared loader."""

from __future__ import annotations

from functools import partial

import numpy as np

from common.data import loader
from vgg_tf.framework import tf
from vgg_tf.model import LAYOUT


def to_tensor(images: np.ndarray, labels: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.convert_to_tensor(images), tf.convert_to_tensor(labels)


load_fashion_mnist = partial(loader.load, layout=LAYOUT, to_tensor=to_tensor)
load_fashion_mnist.__doc__ = "Fashion-MNIST batches in tf.Tensor (NHWC); arguments as common.data.loader.load."
from_arrays = partial(loader.from_arrays, layout=LAYOUT, to_tensor=to_tensor)
