"""PyTorch VGG <-> the canonical (torchvision) weight format in common.core.canonical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.core import canonical, precision
from common.runtime import inference
from vgg_torch.losses import cross_entropy
from vgg_torch.model import LAYOUT, VGG, computing


def _layers(model: VGG, kind: type) -> list:
    return [m for m in model.modules() if isinstance(m, kind)]


_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def export_weights(model: VGG) -> dict[str, np.ndarray]:
    """The model's weights (and batch norms' running statistics) under torchvision's names and layouts."""
    def host(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().copy()

    convs, denses = [[(host(m.weight), host(m.bias)) for m in _layers(model, kind)]
                     for kind in (nn.Conv2d, nn.Linear)]
    norms = [tuple(host(getattr(m, k)) for k in _NORM) for m in _layers(model, nn.BatchNorm2d)]
    return canonical.to_canonical(model, convs, denses, LAYOUT, norms)


def import_weights(model: VGG, weights: dict[str, np.ndarray]) -> None:
    """Load canonical ``weights`` into ``model``; checks every name and shape before changing anything."""
    convs, denses, norms = canonical.from_canonical(model, weights, LAYOUT)
    with torch.no_grad():
        for kind, pairs in ((nn.Conv2d, convs), (nn.Linear, denses)):
            for m, (w, b) in zip(_layers(model, kind), pairs, strict=True):
                m.weight.copy_(torch.tensor(w))  # a copy: w may be a read-only buffer
                m.bias.copy_(torch.tensor(b))
        for m, tensors in zip(_layers(model, nn.BatchNorm2d), norms, strict=True):
            for k, value in zip(_NORM, tensors):
                getattr(m, k).copy_(torch.tensor(value))


def save_weights(model: VGG, path: str | Path) -> Path:
    """Write the canonical weights to a safetensors file."""
    return canonical.save_file(export_weights(model), path)


def load_weights(model: VGG, path: str | Path) -> None:
    """Read a canonical safetensors file (ours or a torchvision ``state_dict``) into ``model``."""
    import_weights(model, canonical.load(path))


def _gradients(model: VGG, images: np.ndarray, labels: np.ndarray,
               label_smoothing: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    inference.check_images(model, images, LAYOUT)
    model.zero_grad(set_to_none=True)
    where = next(model.parameters()).device
    scale = precision.gradient_scale(model.config.precision)  # fp16's, as a training step scales
    with computing(model):
        logits = model(torch.from_numpy(images).to(where)).float()  # the loss in float32
        loss = cross_entropy(logits, torch.from_numpy(np.asarray(labels, np.int64)).to(where), label_smoothing)
    (loss * scale).backward()

    def host(grad: torch.Tensor) -> np.ndarray:
        return (grad / scale).cpu().numpy()

    convs, denses, norms = [[(host(m.weight.grad), host(m.bias.grad)) for m in _layers(model, kind)]
                            for kind in (nn.Conv2d, nn.Linear, nn.BatchNorm2d)]
    model.zero_grad(set_to_none=True)
    return logits.detach().cpu().numpy(), canonical.to_canonical(model, convs, denses, LAYOUT, norms)


def loss_gradients(model: VGG, images: np.ndarray, labels: np.ndarray,
                   label_smoothing: float = 0.0) -> dict[str, np.ndarray]:
    """Gradients of the mean cross-entropy (with ``label_smoothing``) with respect to every weight, dropout
    off (eval mode: batch norms use their running statistics), canonical layout."""
    model.eval()
    return _gradients(model, images, labels, label_smoothing)[1]


def training_outputs(model: VGG, images: np.ndarray, labels: np.ndarray,
                     label_smoothing: float = 0.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits and loss gradients of one training-mode forward with dropout off: batch norms normalise with
    the batch's statistics and update their running ones, as a training step does."""
    model.train()
    for m in _layers(model, nn.Dropout):
        m.eval()
    try:
        return _gradients(model, images, labels, label_smoothing)
    finally:
        model.eval()
