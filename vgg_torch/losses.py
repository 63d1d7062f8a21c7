"""The training loss of the PyTorch VGG: mean cross-entropy, with torch's own label smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of integer ``labels``, computed in float32 (the loss and its softmax) whatever the
    logits' precision; targets ``(1 - a) one-hot + a / classes`` with ``label_smoothing`` a."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


__all__ = ["cross_entropy"]
