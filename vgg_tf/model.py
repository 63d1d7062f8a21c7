"""VGG in TensorFlow/Keras 3: NHWC, ``keras.Sequential`` blocks, Glorot-uniform weights and zero biases."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common import inference, summary
from common.arch import Arch, block_kernel_sizes, check_model_args, kernel_sizes
from vgg_tf.distributed import scope
from vgg_tf.framework import keras, tf

LAYOUT = "NHWC"
_KINDS = {keras.Sequential: "block", keras.layers.Flatten: "flatten", keras.layers.Dense: "dense",
          keras.layers.ReLU: "relu", keras.layers.Dropout: "dropout"}


def vgg_block(num_convs: int, out_channels: int, in_channels: int = 1,
              kernel_sizes: Sequence[int] | None = None) -> keras.Sequential:
    """``num_convs`` convolutions (3x3 unless ``kernel_sizes`` says 1; 'same' padding) each with ReLU, then
    2x2 max pooling; built."""
    layers = [keras.layers.Conv2D(out_channels, k, padding="same", activation="relu")
              for k in block_kernel_sizes(num_convs, kernel_sizes)]
    block = keras.Sequential([*layers, keras.layers.MaxPooling2D(2, strides=2)])
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
                blocks.append(vgg_block(*block[:2], channels, kernel_sizes(block)))
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
