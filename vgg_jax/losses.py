"""The training loss of the Flax VGG: per-example cross-entropy, with optax's own label smoothing."""

from __future__ import annotations

import jax
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example cross-entropy of integer ``labels`` on float32 logits; targets ``(1 - a) one-hot +
    a / classes`` with ``label_smoothing`` a (``optax.smooth_labels``). A Python float: part of the trace."""
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


__all__ = ["cross_entropy"]
