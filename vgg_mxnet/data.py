"""Fashion-MNIST batches as ``mxnet.np.ndarray`` (NCHW float32 images, int64 labels) from the shared loader."""

from __future__ import annotations

from functools import partial

import numpy as np

from common.data import loader
from vgg_mxnet.framework import mx
from vgg_mxnet.model import LAYOUT


def to_tensor(images: np.ndarray, labels: np.ndarray) -> tuple:
    return mx.np.array(images, dtype=np.float32), mx.np.array(labels, dtype=np.int64)


load_fashion_mnist = partial(loader.load, layout=LAYOUT, to_tensor=to_tensor)
load_fashion_mnist.__doc__ = "Fashion-MNIST batches in mxnet.np arrays (NCHW); arguments as common.data.loader.load."
from_arrays = partial(loader.from_arrays, layout=LAYOUT, to_tensor=to_tensor)
