"""VGG in JAX with Flax NNX: NHWC, ``nnx.Sequential`` blocks, Xavier-uniform weights and zero biases."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from common.core import backends, precision, summary
from common.core.arch import BUILDERS, LRN, Arch, block_layers, builder, check_batch_norm, feature_size, layers_of
from common.core.config import Configured, ModelConfig
from common.core.normalization import PAPER_LRN, TORCH_BN, unbiased_running_var
from common.runtime import capability, inference
from vgg_jax.distributed import current
from vgg_jax.framework import check_bf16

NAME = "jax"
LAYOUT = backends.BACKENDS[NAME].layout
#: each ModelConfig.init's (convolution, dense) kernel initialisers; biases start at zero
INITIALISERS = {
    "xavier": (nnx.initializers.xavier_uniform(), nnx.initializers.xavier_uniform()),
    "torchvision": (nnx.initializers.variance_scaling(2.0, "fan_out", "normal"), nnx.initializers.normal(0.01)),
}


def max_pool(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 (NHWC), as a max over a reshaped (N, H/2, 2, W/2, 2, C) view.

    Same forward as ``nnx.max_pool``, but its gradient is a compare-and-mask instead of XLA's
    select-and-scatter, which is slow on CPU. Odd sizes drop the last row/column, like the window.
    """
    n, h, w, c = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def max_pool_pairwise(x: jax.Array) -> jax.Array:
    """:func:`max_pool` as the pairwise maximum of the window's four elements, for blocks with batch norm.

    After a batch norm, :func:`max_pool`'s gradient under ``jit`` (JAX 0.7.1 and 0.12) differs from the
    eager one, which agrees with PyTorch and a float64 reference, by up to 0.8 relative at odd feature-map
    sizes (small_bn at 56x56); its unoptimised compile gives NaN. The pairwise maximum's gradient compares
    the operands themselves and agrees under ``jit``; it is slower, so plain blocks keep :func:`max_pool`.
    """
    n, h, w, c = x.shape
    v = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)  # slices, not strided gathers: ONNX
    return jnp.maximum(jnp.maximum(v[:, :, 0, :, 0], v[:, :, 0, :, 1]), jnp.maximum(v[:, :, 1, :, 0], v[:, :, 1, :, 1]))


def flatten(x: jax.Array) -> jax.Array:
    """Flatten every axis but the batch axis (NHWC order)."""
    return x.reshape(x.shape[0], -1)


def local_response_norm(x: jax.Array) -> jax.Array:
    """AlexNet's local response normalisation across channels (NHWC; common/normalization.py). Flax has no
    such layer; the window sum of squares is a sum of shifted slices, which every exporter converts (a
    channel-axis ``reduce_window`` does not lower to plain TensorFlow ops for ONNX)."""
    lrn = PAPER_LRN
    r, c = lrn.radius, x.shape[-1]
    squares = jnp.pad(x * x, ((0, 0), (0, 0), (0, 0), (r, r)))
    window = sum(squares[..., i:i + c] for i in range(lrn.size))
    return x / (lrn.k + lrn.alpha * window) ** lrn.beta


class BatchNorm(nnx.BatchNorm):
    """Flax's BatchNorm with PyTorch's epsilon and momentum (common/normalization.py) and PyTorch's
    ``num_batches_tracked``; Flax updates the running variance with the biased batch variance, so each
    training call corrects that to PyTorch's unbiased update."""

    def __init__(self, channels: int, *, dtype: jnp.dtype | None = None, rngs: nnx.Rngs) -> None:
        super().__init__(channels, momentum=TORCH_BN.decay, epsilon=TORCH_BN.eps, use_fast_variance=False,
                         dtype=dtype, rngs=rngs)
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def __call__(self, x: jax.Array) -> jax.Array:  # type: ignore[override]  # as Sequential calls it: x alone
        if self.use_running_average:
            return super().__call__(x)
        before = self.var[...]
        y = super().__call__(x)
        self.var[...] = unbiased_running_var(self.var[...], before, x.size // x.shape[-1])
        self.num_batches_tracked[...] += 1
        return y


def vgg_block(num_convs: int, out_channels: int, in_channels: int = 1,
              layers: Sequence[int | str] | None = None, batch_norm: bool = False, *,
              dtype: jnp.dtype | None = None, rngs: nnx.Rngs | None = None, init: str = "xavier") -> nnx.Sequential:
    """``num_convs`` convolutions (3x3 unless ``layers`` gives 1; 'SAME' padding) each followed by batch
    normalisation if ``batch_norm``, then ReLU, and by local response normalisation where ``layers`` has
    ``"lrn"``; then 2x2 max pooling. ``dtype``: Flax's computation dtype of every layer (float32 parameters
    either way; without it Flax promotes a bfloat16 input back to float32). ``init``: the kernels' ModelConfig.init."""
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    made: list = []  # modules and functions, as nnx.Sequential takes them
    kinds = block_layers(num_convs, layers)
    check_batch_norm(batch_norm, kinds)
    for k in kinds:
        if k == LRN:
            made.append(local_response_norm)
            continue
        made.append(nnx.Conv(in_channels, out_channels, kernel_size=(k, k), padding="SAME",
                             kernel_init=INITIALISERS[init][0], dtype=dtype, param_dtype=jnp.float32,
                             rngs=rngs))
        if batch_norm:
            made.append(BatchNorm(out_channels, dtype=dtype, rngs=rngs))
        made.append(nnx.relu)
        in_channels = out_channels
    return nnx.Sequential(*made, max_pool_pairwise if batch_norm else max_pool)


class VGG(Configured, nnx.Sequential):
    """VGG as an ``nnx.Sequential`` (NHWC); its arguments, their checks and
    its layers are :class:`~common.core.config.ModelConfig`'s, kept as ``model.config``."""

    def __init__(self, arch: Arch | ModelConfig, *args, **options) -> None:
        config = ModelConfig.of(arch, *args, **options)
        arch, dropout, batch_norm, hidden = config.arch, config.dropout, config.batch_norm, config.hidden
        capability.announce(NAME, config.precision, current().device)
        if config.precision == "bf16":
            check_bf16()
        dtype = jnp.dtype(precision.get(config.precision).compute)  # on every layer, parameters float32
        rngs = nnx.Rngs(params=config.seed, dropout=config.seed + 1)
        blocks, channels = [], config.in_channels
        for block in arch:
            blocks.append(vgg_block(*block[:2], channels, layers_of(block), batch_norm, dtype=dtype, rngs=rngs,
                                    init=config.init))
            channels = block[1]
        flat = channels * feature_size(arch, config.image_size) ** 2

        def dense(n_in: int, n_out: int) -> nnx.Linear:
            return nnx.Linear(n_in, n_out, kernel_init=INITIALISERS[config.init][1], dtype=dtype,
                              param_dtype=jnp.float32, rngs=rngs)

        super().__init__(
            *blocks, flatten,
            dense(flat, hidden), nnx.relu, nnx.Dropout(dropout, rngs=rngs),
            dense(hidden, hidden), nnx.relu, nnx.Dropout(dropout, rngs=rngs),
            dense(hidden, config.num_classes))
        self.config = config

    def __call__(self, *args, **kwargs):
        """The layers under this model's matmul precision: float32 products in full float32 unless tf32 (JAX's
        GPU default is TensorFloat-32). A trace records it in each product, so it holds for this model alone,
        jitted or not, and nothing else in the process changes."""
        with jax.default_matmul_precision("tensorfloat32" if self.config.precision == "tf32" else "highest"):
            return super().__call__(*args, **kwargs)


def _kind(layer) -> str:
    if isinstance(layer, nnx.Sequential):
        return "block"
    if isinstance(layer, nnx.Linear):
        return "dense"
    if isinstance(layer, nnx.Dropout):
        return "dropout"
    return {flatten: "flatten", nnx.relu: "relu"}[layer]


def layer_summary(model: VGG, input_shape: tuple[int, ...], verbose: bool = False) -> list[tuple[str, tuple]]:
    """``(kind, output_shape)`` of every top-level layer for ``input_shape`` (NHWC), traced abstractly."""
    summary.check_input_shape(input_shape, LAYOUT, model.in_channels, model.image_size)
    rows: list[tuple[str, tuple]] = []
    # shapes only, traced abstractly: no FLOPs spent, no dropout key consumed
    nnx.eval_shape(lambda m: rows.extend(summary.trace(m.layers, jnp.zeros(input_shape), _kind)), model)
    if verbose:
        print(summary.format_summary(rows))
    return rows


def print_layer_summary(model: VGG, input_shape: tuple[int, ...]) -> None:
    """Print the book's table of output shapes."""
    layer_summary(model, input_shape, verbose=True)


def parameter_count(model: VGG) -> int:
    """Number of trainable parameters."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@nnx.jit
def eval_logits(model: VGG, images: jax.typing.ArrayLike) -> jax.Array:
    """The jitted forward pass, in whatever mode ``model`` is (predict and evaluate set eval); the logits in
    float32 whatever the model's compute dtype."""
    return model(images).astype(jnp.float32)


def predict(model: VGG, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for NumPy ``images`` (N, H, W, C), dropout off, computed ``batch_size`` at a time."""
    model.eval()  # and stays in eval mode, as in every backend; a training step sets training mode itself
    return inference.predict_batches(model, images, LAYOUT, lambda x: eval_logits(model, x), batch_size)


vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn = (builder(VGG, name) for name in BUILDERS)
