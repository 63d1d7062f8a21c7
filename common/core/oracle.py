"""A NumPy forward pass of canonical weights (NCHW, float64): the parity suite's referee. Eval mode uses
batch norms' running statistics; training mode (dropout still off) the batch's, and updates the running ones.

It belongs to no framework, so a bug shared by two backends still shows up against it.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from common.core.arch import LRN, layers_of, validate
from common.core.canonical import DENSE
from common.core.normalization import PAPER_LRN, TORCH_BN
from common.core.precision import PRECISIONS, round_to


def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """kxk convolution (k odd, padding k // 2, stride 1); (N, C, H, W) -> (N, O, H, W), via one BLAS product."""
    k = weight.shape[-1]
    padded = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    # (N, C, H, W, k, k), no copy; NumPy 1.26's stubs type ``axis`` as one int, the function takes a tuple
    windows = sliding_window_view(padded, (k, k), axis=(2, 3))  # type: ignore[call-overload]
    out = np.tensordot(windows, weight, axes=([1, 4, 5], [1, 2, 3]))  # (N, H, W, O)
    return (out + bias).transpose(0, 3, 1, 2)


def conv_relu(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """:func:`conv`, then ReLU."""
    return np.maximum(conv(x, weight, bias), 0)


def batch_norm_layer(x: np.ndarray, tensors: dict[str, np.ndarray], training: bool, bn=TORCH_BN) -> np.ndarray:
    """PyTorch's ``BatchNorm2d`` on (N, C, H, W). In training, normalise with the batch mean and biased
    variance and update ``tensors``' running statistics in place with the unbiased one."""
    if training:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        count = x.size // x.shape[1]
        tensors["running_mean"] = (1 - bn.momentum) * tensors["running_mean"] + bn.momentum * mean
        tensors["running_var"] = (1 - bn.momentum) * tensors["running_var"] + bn.momentum * var * count / (count - 1)
        tensors["num_batches_tracked"] = tensors["num_batches_tracked"] + 1
    else:
        mean, var = tensors["running_mean"], tensors["running_var"]
    scale = tensors["weight"] / np.sqrt(var + bn.eps)
    return (x - mean[:, None, None]) * scale[:, None, None] + tensors["bias"][:, None, None]


def local_response_norm(x: np.ndarray, lrn=PAPER_LRN) -> np.ndarray:
    """AlexNet's LRN across the channels of (N, C, H, W): x / (k + alpha * window sum of squares) ** beta."""
    r = lrn.radius
    squares = np.pad(x * x, ((0, 0), (r, r), (0, 0), (0, 0)))
    window = sum(squares[:, i:i + x.shape[1]] for i in range(lrn.size))
    return x / (lrn.k + lrn.alpha * window) ** lrn.beta


def max_pool2x2(x: np.ndarray) -> np.ndarray:
    """2x2 max pooling with stride 2, dropping an odd last row/column as every framework does."""
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def forward(weights: dict[str, np.ndarray], arch, images: np.ndarray, batch_norm: bool = False,
            training: bool = False, precision: str = "fp32") -> np.ndarray:
    """Logits of a VGG with canonical ``weights`` for NCHW ``images``, dropout off. With ``training``, batch
    norms use the batch's statistics and update the running ones in ``weights`` (a training step's forward).

    ``precision`` bf16 or fp16 is the rounding oracle of mixed precision: every convolution's and dense
    layer's inputs, weights and bias are rounded to the format where an autocast casts them, the product is
    accumulated in float64, and its output is rounded again (round to nearest even), as the low-precision
    kernels' outputs are; ReLU and max pooling keep values exact. fp32 is the plain float64 forward."""
    mixed = PRECISIONS[precision].mixed

    def low(a: np.ndarray) -> np.ndarray:
        return round_to(a, precision) if mixed else np.asarray(a, np.float64)

    x = np.asarray(images, dtype=np.float64)
    index = 0
    for block in validate(arch):
        for layer in layers_of(block):
            if layer == LRN:
                x = local_response_norm(x)
                index += 1
                continue
            x = low(conv(low(x), low(weights[f"features.{index}.weight"]), low(weights[f"features.{index}.bias"])))
            if batch_norm:
                prefix = f"features.{index + 1}."
                tensors = {k[len(prefix):]: v.astype(np.float64) if v.dtype.kind == "f" else v
                           for k, v in weights.items() if k.startswith(prefix)}
                x = batch_norm_layer(x, tensors, training)
                weights.update({prefix + k: v for k, v in tensors.items()})
            x = np.maximum(x, 0)
            index += 3 if batch_norm else 2
        x = max_pool2x2(x)
        index += 1
    x = x.reshape(len(x), -1)
    for i, name in enumerate(DENSE):
        x = low(low(x) @ low(weights[f"{name}.weight"]).T + low(weights[f"{name}.bias"]))
        if i < len(DENSE) - 1:
            x = np.maximum(x, 0)
    return x
