"""Every NCHW <-> NHWC conversion in one place: image batches, their shapes, convolution kernels and the
rows of the first dense layer (whose order follows the flatten of the last feature map)."""

from __future__ import annotations

import numpy as np

LAYOUTS = ("NCHW", "NHWC")

Shape = tuple[int, ...]


def check(layout: str) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`, else a ValueError naming both."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    return layout


def images_from_nchw(images_nchw: np.ndarray, layout: str) -> np.ndarray:
    """NCHW NumPy images in ``layout``, contiguous."""
    return np.ascontiguousarray(images_nchw if check(layout) == "NCHW" else images_nchw.transpose(0, 2, 3, 1))


def with_channels(images: np.ndarray, layout: str) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W) for NCHW or (N, H, W, 1) for NHWC, without copying."""
    return images[:, None] if check(layout) == "NCHW" else images[..., None]


def shape_to_nchw(shape: Shape, layout: str) -> Shape:
    """A 4-d (or 3-d, batchless) image shape from ``layout`` to NCHW; other ranks pass through."""
    shape = tuple(int(s) for s in shape)
    if check(layout) == "NCHW" or len(shape) not in (3, 4):
        return shape
    *batch, h, w, c = shape
    return (*batch, c, h, w)


def shape_from_nchw(shape: Shape, layout: str) -> Shape:
    """Inverse of :func:`shape_to_nchw`."""
    shape = tuple(int(s) for s in shape)
    if check(layout) == "NCHW" or len(shape) not in (3, 4):
        return shape
    *batch, c, h, w = shape
    return (*batch, h, w, c)


def oihw_to_hwio(kernel: np.ndarray) -> np.ndarray:
    """A convolution kernel from torch's (out, in, h, w) to TensorFlow's and Flax's (h, w, in, out)."""
    return np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))


def hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`oihw_to_hwio`."""
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def nhwc_rows(channels: int, side: int) -> np.ndarray:
    """Index ``p`` such that ``nchw_flat[p]`` is ``nhwc_flat``: feature ``j`` of an NHWC flatten is
    (h, w, c) and sits at position c*side*side + h*side + w of the NCHW flatten."""
    return np.arange(channels * side * side).reshape(channels, side, side).transpose(1, 2, 0).ravel()


def first_dense_to_nhwc(weight_in_out: np.ndarray, channels: int, side: int) -> np.ndarray:
    """Permute the input rows of the first dense layer (in, out) from NCHW to NHWC flatten order."""
    return np.ascontiguousarray(weight_in_out[nhwc_rows(channels, side)])


def first_dense_to_nchw(weight_in_out: np.ndarray, channels: int, side: int) -> np.ndarray:
    """Inverse of :func:`first_dense_to_nhwc`."""
    out = np.empty_like(weight_in_out)
    out[nhwc_rows(channels, side)] = weight_in_out
    return out
