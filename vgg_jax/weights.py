"""Flax NNX VGG <-> the canonical (torchvision) weight format in common.core.canonical."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from common.core import canonical, precision
from common.runtime import inference
from vgg_jax.losses import cross_entropy
from vgg_jax.model import LAYOUT, VGG, BatchNorm


def _layers(model: VGG, kind: type) -> list:
    found = []
    for layer in model.layers:
        found += [m for m in layer.layers if isinstance(m, kind)] if isinstance(layer, nnx.Sequential) else (
            [layer] if isinstance(layer, kind) else [])
    return found


_NORM = ("scale", "bias", "mean", "var", "num_batches_tracked")  # torchvision's order


def export_weights(model: VGG) -> dict[str, np.ndarray]:
    """The model's weights (and batch norms' running statistics) under torchvision's names and layouts."""
    convs, denses = [[(np.asarray(m.kernel[...]), np.asarray(m.bias[...])) for m in _layers(model, kind)]
                     for kind in (nnx.Conv, nnx.Linear)]
    norms = [tuple(np.asarray(getattr(m, k)[...]) for k in _NORM) for m in _layers(model, BatchNorm)]
    return canonical.to_canonical(model, convs, denses, LAYOUT, norms)


def import_weights(model: VGG, weights: dict[str, np.ndarray]) -> None:
    """Load canonical ``weights`` into ``model``; checks every name and shape before changing anything."""
    convs, denses, norms = canonical.from_canonical(model, weights, LAYOUT)
    for kind, pairs in ((nnx.Conv, convs), (nnx.Linear, denses)):
        for m, (w, b) in zip(_layers(model, kind), pairs, strict=True):
            m.kernel[...] = jnp.asarray(w)
            m.bias[...] = jnp.asarray(b)
    for m, tensors in zip(_layers(model, BatchNorm), norms, strict=True):
        for k, value in zip(_NORM, tensors):
            variable = getattr(m, k)
            variable[...] = jnp.asarray(value, dtype=variable[...].dtype)


def save_weights(model: VGG, path: str | Path) -> Path:
    """Write the canonical weights to a safetensors file."""
    return canonical.save_file(export_weights(model), path)


def load_weights(model: VGG, path: str | Path) -> None:
    """Read a canonical safetensors file (ours or a torchvision ``state_dict``) into ``model``."""
    import_weights(model, canonical.load(path))


def _gradients(model: VGG, images: np.ndarray, labels: np.ndarray,
               label_smoothing: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    inference.check_images(model, images, LAYOUT)

    scale = precision.gradient_scale(model.config.precision)  # fp16's, as a training step scales

    def loss(m: VGG) -> tuple[jnp.ndarray, jnp.ndarray]:
        logits = m(jnp.asarray(images)).astype(jnp.float32)
        return cross_entropy(logits, jnp.asarray(labels), label_smoothing).mean() * scale, logits

    grads, logits = nnx.grad(loss, has_aux=True)(model)
    grads = jax.tree.map(lambda g: g / scale, grads)
    graphdef, _, *rest = nnx.split(model, nnx.Param, ...)
    twin = export_weights(nnx.merge(graphdef, grads, *rest))  # a twin whose parameters hold the gradients
    statistics = canonical.running_statistics(twin)  # the twin's own, not gradients
    return np.asarray(logits), {k: v for k, v in twin.items() if k not in statistics}


def loss_gradients(model: VGG, images: np.ndarray, labels: np.ndarray,
                   label_smoothing: float = 0.0) -> dict[str, np.ndarray]:
    """Gradients of the mean cross-entropy (with ``label_smoothing``) with respect to every weight, dropout
    off (eval mode: batch norms use their running statistics), canonical layout."""
    model.eval()  # and stays in eval mode, as after predict (one rule in all four backends)
    return _gradients(model, images, labels, label_smoothing)[1]


def training_outputs(model: VGG, images: np.ndarray, labels: np.ndarray,
                     label_smoothing: float = 0.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits and loss gradients of one training-mode forward with dropout off: batch norms normalise with
    the batch's statistics and update their running ones, as a training step does."""
    model.train()
    for m in model.layers:
        if isinstance(m, nnx.Dropout):
            m.deterministic = True
    try:
        return _gradients(model, images, labels, label_smoothing)
    finally:
        model.eval()  # as after predict; a training step sets training mode itself
