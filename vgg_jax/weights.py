"""Flax NNX VGG <-> the canonical (torchvision) weight format in common.weights."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from common import inference, weights as canonical
from vgg_jax.model import LAYOUT, VGG


def _layers(model: VGG, kind: type) -> list:
    found = []
    for layer in model.layers:
        found += [m for m in layer.layers if isinstance(m, kind)] if isinstance(layer, nnx.Sequential) else (
            [layer] if isinstance(layer, kind) else [])
    return found


def export_weights(model: VGG) -> dict[str, np.ndarray]:
    """The model's weights under torchvision's names and layouts."""
    pairs = [[(np.asarray(m.kernel[...]), np.asarray(m.bias[...])) for m in _layers(model, kind)]
             for kind in (nnx.Conv, nnx.Linear)]
    return canonical.to_canonical(model, *pairs, LAYOUT)


def import_weights(model: VGG, weights: dict[str, np.ndarray]) -> None:
    """Load canonical ``weights`` into ``model``; checks every name and shape before changing anything."""
    convs, denses = canonical.from_canonical(model, weights, LAYOUT)
    for kind, pairs in ((nnx.Conv, convs), (nnx.Linear, denses)):
        for m, (w, b) in zip(_layers(model, kind), pairs, strict=True):
            m.kernel[...] = jnp.asarray(w)
            m.bias[...] = jnp.asarray(b)


def save_weights(model: VGG, path: str | Path) -> Path:
    """Write the canonical weights to a safetensors file."""
    return canonical.save_file(export_weights(model), path)


def load_weights(model: VGG, path: str | Path) -> None:
    """Read a canonical safetensors file (ours or a torchvision ``state_dict``) into ``model``."""
    import_weights(model, canonical.load(path))


def loss_gradients(model: VGG, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of the mean cross-entropy with respect to every weight, dropout off, canonical layout."""
    inference.check_images(model, images, LAYOUT)

    def loss(m: VGG) -> jnp.ndarray:
        return optax.softmax_cross_entropy_with_integer_labels(m(jnp.asarray(images)), jnp.asarray(labels)).mean()

    model.eval()
    try:
        grads = nnx.grad(loss)(model)
    finally:
        model.train()
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    return export_weights(nnx.merge(graphdef, grads, rest))  # a twin whose parameters hold the gradients
