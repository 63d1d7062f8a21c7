"""VGG in TensorFlow/Keras 3: NHWC, ``keras.Sequential`` blocks, Glorot-uniform weights and zero biases."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence

import numpy as np

from common.core import backends, precision, summary
from common.core.arch import BUILDERS, LRN, Arch, block_layers, builder, check_batch_norm, layers_of
from common.core.config import Configured, ModelConfig
from common.core.normalization import PAPER_LRN, TORCH_BN, unbiased_running_var
from common.runtime import capability, inference
from vgg_tf.distributed import current, scope
from vgg_tf.framework import keras, set_tf32, tf

NAME = "tf"
LAYOUT = backends.BACKENDS[NAME].layout
#: compute dtype -> the Keras dtype policy of mixed precision in that dtype
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
_KINDS = {keras.Sequential: "block", keras.layers.Flatten: "flatten", keras.layers.Dense: "dense",
          keras.layers.ReLU: "relu", keras.layers.Dropout: "dropout"}


class LocalResponseNorm(keras.layers.Layer):
    """AlexNet's local response normalisation across channels (common/normalization.py) on TensorFlow's op,
    which takes a radius and alpha for the plain sum; Keras 3 has no such layer."""

    def call(self, x):
        lrn = PAPER_LRN
        return tf.nn.local_response_normalization(x, depth_radius=lrn.radius, bias=lrn.k, alpha=lrn.alpha,
                                                  beta=lrn.beta)


class BatchNorm(keras.layers.BatchNormalization):
    """Keras's BatchNormalization with PyTorch's epsilon and momentum (common/normalization.py) and PyTorch's
    ``num_batches_tracked``; Keras updates the running variance with the biased batch variance, so each
    training call corrects that to PyTorch's unbiased update."""

    def __init__(self, **kwargs) -> None:
        super().__init__(momentum=TORCH_BN.decay, epsilon=TORCH_BN.eps, **kwargs)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.num_batches_tracked = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False,
                                                   name="num_batches_tracked")

    def call(self, inputs, training=None):
        if not (training and self.trainable):
            return super().call(inputs, training=training)
        before = tf.identity(self.moving_variance)
        outputs = super().call(inputs, training=training)
        count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], self.moving_variance.dtype)
        self.moving_variance.assign(unbiased_running_var(self.moving_variance.value, before, count))
        self.num_batches_tracked.assign_add(1)
        return outputs


#: each ModelConfig.init's (convolution, dense) kernel initialisers, made per layer (each draws from the global
#: seed); biases start at zero
INITIALISERS = {
    "xavier": (lambda: "glorot_uniform", lambda: "glorot_uniform"),
    "torchvision": (lambda: keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
                    lambda: keras.initializers.RandomNormal(0.0, 0.01)),
}


def vgg_block(num_convs: int, out_channels: int, in_channels: int = 1,
              layers: Sequence[int | str] | None = None, batch_norm: bool = False,
              dtype: str | None = None, init: str = "xavier") -> keras.Sequential:
    """``num_convs`` convolutions (3x3 unless ``layers`` gives 1; 'same' padding) each followed by batch
    normalisation if ``batch_norm``, then ReLU (the convolution's activation without), and by local response
    normalisation where ``layers`` has ``"lrn"``; then 2x2 max pooling; built. ``dtype``: every layer's Keras
    dtype policy (``"mixed_bfloat16"``: bfloat16 compute over float32 variables). ``init``: the kernels'
    ModelConfig.init."""
    kinds = block_layers(num_convs, layers)
    kernel = INITIALISERS[init][0]
    check_batch_norm(batch_norm, kinds)
    L, made = keras.layers, []
    for k in kinds:
        if k == LRN:
            made.append(LocalResponseNorm(dtype=dtype))
        elif batch_norm:
            made += [L.Conv2D(out_channels, k, padding="same", kernel_initializer=kernel(), dtype=dtype),
                     BatchNorm(dtype=dtype), L.ReLU(dtype=dtype)]
        else:
            made.append(L.Conv2D(out_channels, k, padding="same", activation="relu", kernel_initializer=kernel(),
                                 dtype=dtype))
    block = keras.Sequential([*made, L.MaxPooling2D(2, strides=2, dtype=dtype)])
    block.build((None, None, None, in_channels))
    return block


@contextlib.contextmanager
def _global_seed(seed: int) -> Iterator[None]:
    """Keras initialisers draw from the global seed, which ``keras.utils.set_random_seed`` also sets for
    Python's and NumPy's generators: theirs are restored afterwards, as torch's ``fork_rng`` does."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class VGG(Configured, keras.Sequential):
    """VGG as a ``keras.Sequential`` (NHWC); its arguments, their checks and
    its layers are :class:`~common.core.config.ModelConfig`'s, kept as ``model.config``."""

    def __init__(self, arch: Arch | ModelConfig, *args, **options) -> None:
        config = ModelConfig.of(arch, *args, **options)
        arch, dropout, batch_norm, hidden = config.arch, config.dropout, config.batch_norm, config.hidden
        capability.announce(NAME, config.precision, current().device)
        # each layer's own dtype policy, never the process-global one, so no other model is touched
        dtype = POLICIES[precision.get(config.precision).compute]
        with scope(), _global_seed(config.seed):  # mirrored variables under tf.distribute (vgg_tf.distributed)
            blocks, channels = [], config.in_channels
            for block in arch:
                blocks.append(vgg_block(*block[:2], channels, layers_of(block), batch_norm, dtype, config.init))
                channels = block[1]
            L, dense = keras.layers, INITIALISERS[config.init][1]
            super().__init__([
                keras.Input((config.image_size, config.image_size, config.in_channels)), *blocks,
                L.Flatten(dtype=dtype),
                L.Dense(hidden, kernel_initializer=dense(), dtype=dtype), L.ReLU(dtype=dtype),
                L.Dropout(dropout, dtype=dtype),
                L.Dense(hidden, kernel_initializer=dense(), dtype=dtype), L.ReLU(dtype=dtype),
                L.Dropout(dropout, dtype=dtype),
                L.Dense(config.num_classes, kernel_initializer=dense(), dtype=dtype)])
        self.config = config

    def __call__(self, *args, **kwargs):
        """Keras's call, after :func:`use_tf32` for this model's precision."""
        use_tf32(self)
        return super().__call__(*args, **kwargs)


def use_tf32(model: VGG) -> None:
    """TensorFloat-32 products on a GPU for a tf32 model only, set whenever the model computes, as torch's
    ``computing`` does. Process-wide, not scoped: TensorFlow has one switch, read when a kernel runs (and when
    XLA compiles), which a traced graph does not record; so a ``tf.function`` step sets it when traced, and
    it holds until another model of another precision computes in the same process."""
    set_tf32(model.config.precision == "tf32")


def logits_of(model: VGG, images, training: bool = False):
    """The model's logits in float32, whatever its compute dtype: the loss and softmax stay float32."""
    return tf.cast(model(images, training=training), tf.float32)


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
    return inference.predict_batches(model, images, LAYOUT, lambda x: logits_of(model, x).numpy(), batch_size)


vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn = (builder(VGG, name) for name in BUILDERS)
