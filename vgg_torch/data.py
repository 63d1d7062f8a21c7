"""Fashion-MNIST batches as ``torch.Tensor`` (NCHW float32 images, int64 labels) from the shared loader."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from common.data import loader
from vgg_torch.distributed import current
from vgg_torch.model import LAYOUT


def to_tensor(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-copy views of the NumPy batch; under ``--device gpu`` in pinned host memory, so the training
    step's copy to the GPU runs asynchronously (``non_blocking``)."""
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    if current().device == "gpu":
        return x.pin_memory(), y.pin_memory()
    return x, y


load_fashion_mnist = partial(loader.load, layout=LAYOUT, to_tensor=to_tensor)
load_fashion_mnist.__doc__ = "Fashion-MNIST batches in torch tensors (NCHW); arguments as common.data.loader.load."
from_arrays = partial(loader.from_arrays, layout=LAYOUT, to_tensor=to_tensor)
