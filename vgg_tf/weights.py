"""Keras VGG <-> the canonical (torchvision) weight format in common.core.canonical."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.core import canonical, precision
from common.runtime import inference
from vgg_tf.framework import keras, tf
from vgg_tf.losses import cross_entropy
from vgg_tf.model import LAYOUT, VGG, BatchNorm, logits_of, use_tf32


def _layers(model: VGG, kind: type) -> list:
    found = []
    for layer in model.layers:
        found += [m for m in layer.layers if isinstance(m, kind)] if isinstance(layer, keras.Sequential) else (
            [layer] if isinstance(layer, kind) else [])
    return found


_NORM = ("gamma", "beta", "moving_mean", "moving_variance", "num_batches_tracked")  # torchvision's order


def export_weights(model: VGG) -> dict[str, np.ndarray]:
    """The model's weights (and batch norms' running statistics) under torchvision's names and layouts."""
    convs, denses = [[(m.kernel.numpy(), m.bias.numpy()) for m in _layers(model, kind)]
                     for kind in (keras.layers.Conv2D, keras.layers.Dense)]
    norms = [tuple(getattr(m, k).numpy() for k in _NORM) for m in _layers(model, BatchNorm)]
    return canonical.to_canonical(model, convs, denses, LAYOUT, norms)


def import_weights(model: VGG, weights: dict[str, np.ndarray]) -> None:
    """Load canonical ``weights`` into ``model``; checks every name and shape before changing anything."""
    convs, denses, norms = canonical.from_canonical(model, weights, LAYOUT)
    for kind, pairs in ((keras.layers.Conv2D, convs), (keras.layers.Dense, denses)):
        for m, (w, b) in zip(_layers(model, kind), pairs, strict=True):
            m.kernel.assign(w)
            m.bias.assign(b)
    for m, tensors in zip(_layers(model, BatchNorm), norms, strict=True):
        for k, value in zip(_NORM, tensors):
            getattr(m, k).assign(value)


def save_weights(model: VGG, path: str | Path) -> Path:
    """Write the canonical weights to a safetensors file."""
    return canonical.save_file(export_weights(model), path)


def load_weights(model: VGG, path: str | Path) -> None:
    """Read a canonical safetensors file (ours or a torchvision ``state_dict``) into ``model``."""
    import_weights(model, canonical.load(path))


def _gradients(model: VGG, images: np.ndarray, labels: np.ndarray, training: bool,
               label_smoothing: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    inference.check_images(model, images, LAYOUT)
    layers = [_layers(model, kind) for kind in (keras.layers.Conv2D, keras.layers.Dense)]
    norms = _layers(model, BatchNorm)
    variables = [v for group in layers for m in group for v in (m.kernel, m.bias)]
    variables += [v for m in norms for v in (m.gamma, m.beta)]
    with tf.GradientTape() as tape:
        if training:  # every layer in training mode but the dropouts
            use_tf32(model)  # as a call of the model would
            x = tf.convert_to_tensor(images)
            for layer in model.layers:
                x = x if isinstance(layer, keras.layers.Dropout) else layer(x, training=True)
            logits = tf.cast(x, tf.float32)
        else:
            logits = logits_of(model, images)
        loss = tf.reduce_mean(cross_entropy(logits, labels, label_smoothing))
        scale = precision.gradient_scale(model.config.precision)  # fp16's, as a training step scales
        scaled = loss * scale
    grads = iter(g.numpy() / scale for g in tape.gradient(scaled, variables))
    convs, denses, norm_grads = [[(next(grads), next(grads)) for _ in group] for group in [*layers, norms]]
    return logits.numpy(), canonical.to_canonical(model, convs, denses, LAYOUT, norm_grads)


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
