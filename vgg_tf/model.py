"""VGG in TensorFlow/Keras 3: NHWC, ``keras.Sequential`` blocks, Glorot-uniform weights and zero biases."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common import inference, summary
from common.arch import LRN, Arch, block_layers, check_model_args, layers_of
from common.normalization import PAPER_LRN
from vgg_tf.distributed import scope
from vgg_tf.framework import keras, tf

LAYOUT = "NHWC"
_KINDS = {keras.Sequential: "block", keras.layers.Flatten: "flatten", keras.layers.Dense: "dense",
          keras.layers.ReLU: "relu", keras.layers.Dropout: "dropout"}


class LocalResponseNorm(keras.layers.Layer):
    """AlexNet's local response normalisation across channels (common/normalization.py) on TensorFlow's op,
    which takes a radius and alpha for the plain sum; Keras 3 has no such layer."""

    def call(self, x):
        lrn = PAPER_LRN
        return tf.nn.local_response_normalization(x, depth_radius=lrn.radius, bias=lrn.k, alpha=lrn.alpha,
                                                  beta=lrn.beta)


def vgg_block(num_convs: int, out_channels: int, in_channels: int = 1,
              layers: Sequence[int | str] | None = None) -> keras.Sequential:
    """``num_convs`` convolutions (3x3 unless ``layers`` gives 1; 'same' padding) each with ReLU, and local
    response normalisation where ``layers`` has ``"lrn"``; then 2x2 max pooling; built."""
    made = [LocalResponseNorm() if k == LRN else keras.layers.Conv2D(out_channels, k, padding="same", activation="relu")
            for k in block_layers(num_convs, layers)]
    block = keras.Sequential([*made, keras.layers.MaxPooling2D(2, strides=2)])
    block.build((None, None, None, in_channels))
    return block


class VGG(keras.Sequential):
    """The blocks of ``arch``, flatten, then Dense(4096)-ReLU-Dropout-Dense(4096)-ReLU-Dropout-Dense."""

    def __init__(self, arch: Arch, num_classes: int = 10, in_channels: int = 1, image_size: int = 224,
                 dropout: float = 0.5, seed: int = 0, **kwargs) -> None:
        arch = check_model_args(arch, num_classes, in_channels, image_size, dropout)
        keras.utils.set_random_seed(seed)  # Keras initialisers draw from the global seed
        with scope():  # mirrored variables under tf.distribute (see vgg_tf.distributed)
            blocks, channels = [], in_channels
            for block in arch:
                blocks.append(vgg_block(*block[:2], channels, layers_of(block)))
                channels = block[1]
            L = keras.layers
            super().__init__([
                keras.Input((image_size, image_size, in_channels)), *blocks, L.Flatten(),
                L.Dense(summary.HIDDEN), L.ReLU(), L.Dropout(dropout),
                L.Dense(summary.HIDDEN), L.ReLU(), L.Dropout(dropout),
                L.Dense(num_classes)], **kwargs)
        self.arch, self.num_classes, self.in_channels = arch, num_classes, in_channels
        self.image_size, self.dropout, self.seed = image_size, dropout, seed


def layer_summary(model: VGG, input_shape: tuple[int, ...], verbose: bool = False) -> list[tuple[str, tuple]]:
    """``(kind, output_shape)`` of every top-level layer for a zero batch of ``input_shape`` (NHWC)."""
    summary.check_input_shape(input_shape, LAYOUT, model.in_channels, model.image_size)
    rows = summary.trace(model.layers, tf.zeros(input_shape), lambda layer: _KINDS[type(layer)])
    if verbose:
        print(summary.format_summary(rows))
    return rows


def print_layer_summary(model: VGG, input_shape: tuple[int, ...]) -> None:
    """Print the book's table of output shapes."""
    layer_summary(model, input_shape, verbose=True)


def parameter_count(model: VGG) -> int:
    """Number of trainable parameters."""
    return int(sum(w.numpy().size for w in model.trainable_weights))


def predict(model: VGG, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for NumPy ``images`` (N, H, W, C), dropout off, computed ``batch_size`` at a time."""
    return inference.predict_batches(model, images, LAYOUT, lambda x: model(x, training=False).numpy(),
                                     batch_size)
