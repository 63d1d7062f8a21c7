"""MXNet Gluon VGG <-> the canonical (torchvision) weight format in common.core.canonical."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.core import canonical
from common.runtime import inference
from vgg_mxnet.framework import gluon, mx
from vgg_mxnet.losses import cross_entropy
from vgg_mxnet.model import LAYOUT, VGG, BatchNorm, finish_batch_norms, running_variances


def _layers(model: VGG, kind: type) -> list:
    found = []
    for layer in model:
        found += [m for m in layer if isinstance(m, kind)] if isinstance(layer, gluon.nn.HybridSequential) else (
            [layer] if isinstance(layer, kind) else [])
    return found


_NORM = ("gamma", "beta", "running_mean", "running_var", "num_batches_tracked")  # torchvision's order


def export_weights(model: VGG) -> dict[str, np.ndarray]:
    """The model's weights (and batch norms' running statistics) under torchvision's names and layouts."""
    convs, denses = [[(m.weight.data().asnumpy(), m.bias.data().asnumpy()) for m in _layers(model, kind)]
                     for kind in (gluon.nn.Conv2D, gluon.nn.Dense)]
    norms = [tuple(getattr(m, k).data().asnumpy() for k in _NORM) for m in _layers(model, BatchNorm)]
    return canonical.to_canonical(model, convs, denses, LAYOUT, norms)


def import_weights(model: VGG, weights: dict[str, np.ndarray]) -> None:
    """Load canonical ``weights`` into ``model``; checks every name and shape before changing anything."""
    convs, denses, norms = canonical.from_canonical(model, weights, LAYOUT)
    for kind, pairs in ((gluon.nn.Conv2D, convs), (gluon.nn.Dense, denses)):
        for m, (w, b) in zip(_layers(model, kind), pairs, strict=True):
            m.weight.set_data(mx.np.array(w))
            m.bias.set_data(mx.np.array(b))
    for m, tensors in zip(_layers(model, BatchNorm), norms, strict=True):
        for k, value in zip(_NORM, tensors):
            param = getattr(m, k)
            param.set_data(mx.np.array(value, dtype=value.dtype).reshape(param.shape))


def save_weights(model: VGG, path: str | Path) -> Path:
    """Write the canonical weights to a safetensors file."""
    return canonical.save_file(export_weights(model), path)


def load_weights(model: VGG, path: str | Path) -> None:
    """Read a canonical safetensors file (ours or a torchvision ``state_dict``) into ``model``."""
    import_weights(model, canonical.load(path))


def _gradients(model: VGG, images: np.ndarray, labels: np.ndarray, training: bool,
               label_smoothing: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    inference.check_images(model, images, LAYOUT)
    x = mx.np.array(images)
    before = running_variances(model)
    # Recorded in train mode with the dropout layers skipped: under oneDNN, MXNet 1.9.1's max-pool
    # backward is wrong when recorded with train_mode=False (it keeps no workspace). Batch norms then
    # see train mode too, so for eval mode they are told to use their running statistics.
    norms = _layers(model, BatchNorm)
    for m in norms:
        m._kwargs["use_global_stats"] = not training
    try:
        with mx.autograd.record(train_mode=True):
            for layer in model:
                x = x if isinstance(layer, gluon.nn.Dropout) else layer(x)
            loss = cross_entropy(x, mx.np.array(labels), label_smoothing).mean()
        loss.backward()
    finally:
        for m in norms:
            m._kwargs["use_global_stats"] = False
    if training:
        finish_batch_norms(model, before, len(images))
    convs, denses = [[(m.weight.grad().asnumpy(), m.bias.grad().asnumpy()) for m in _layers(model, kind)]
                     for kind in (gluon.nn.Conv2D, gluon.nn.Dense)]
    norms = [(m.gamma.grad().asnumpy(), m.beta.grad().asnumpy()) for m in norms]
    return x.asnumpy(), canonical.to_canonical(model, convs, denses, LAYOUT, norms)


def loss_gradients(model: VGG, images: np.ndarray, labels: np.ndarray,
                   label_smoothing: float = 0.0) -> dict[str, np.ndarray]:
    """Gradients of the mean cross-entropy (with ``label_smoothing``) with respect to every weight, dropout
    off (eval mode: batch norms use their running statistics), canonical layout."""
    return _gradients(model, images, labels, False, label_smoothing)[1]


def training_outputs(model: VGG, images: np.ndarray, labels: np.ndarray,
                     label_smoothing: float = 0.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits and loss gradients of one training-mode forward with dropout off: batch norms normalise with
    the batch's statistics and update their running ones, as a training step does."""
    return _gradients(model, images, labels, True, label_smoothing)
