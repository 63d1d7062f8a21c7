"""The training loss of the Keras VGG: per-example cross-entropy, with Keras's own label smoothing."""

from __future__ import annotations

from vgg_tf.framework import keras, tf


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
    """Per-example cross-entropy of integer ``labels`` on float32 logits; targets ``(1 - a) one-hot +
    a / classes`` with ``label_smoothing`` a (Keras's ``categorical_crossentropy``), else TF's sparse op."""
    labels = tf.cast(labels, tf.int64)
    if not label_smoothing:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    return keras.losses.categorical_crossentropy(tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype),
                                                 logits, from_logits=True, label_smoothing=label_smoothing)


__all__ = ["cross_entropy"]
