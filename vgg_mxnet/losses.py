"""The training loss of the Gluon VGG: per-example cross-entropy, label smoothing as GluonCV does it."""

from __future__ import annotations

from vgg_mxnet.framework import gluon, mx

_SPARSE = gluon.loss.SoftmaxCrossEntropyLoss()  # integer labels
_DENSE = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)  # a distribution over the classes


def cross_entropy(logits: mx.np.ndarray, labels: mx.np.ndarray, label_smoothing: float = 0.0) -> mx.np.ndarray:
    """Per-example cross-entropy of integer ``labels``; targets ``(1 - a) one-hot + a / classes`` with
    ``label_smoothing`` a (Gluon's loss has no smoothing of its own: GluonCV builds the smoothed targets)."""
    if not label_smoothing:
        return _SPARSE(logits, labels)
    classes = logits.shape[-1]
    targets = mx.npx.one_hot(labels, classes) * (1 - label_smoothing) + label_smoothing / classes
    return _DENSE(logits, targets)


__all__ = ["cross_entropy"]
