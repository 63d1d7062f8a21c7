"""VGG in MXNet Gluon: NCHW, ``HybridSequential`` blocks, Xavier-uniform weights and zero biases."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from common.core import backends, summary
from common.core.arch import BUILDERS, LRN, Arch, block_layers, builder, check_batch_norm, feature_size, layers_of
from common.core.config import Configured, ModelConfig
from common.core.normalization import PAPER_LRN, TORCH_BN, unbiased_running_var
from common.runtime import capability, inference
from vgg_mxnet.framework import mx, nn

NAME = "mxnet"
LAYOUT = backends.BACKENDS[NAME].layout
#: Xavier/Glorot uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), as torch, Keras and Flax use.
XAVIER = mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3)
#: each ModelConfig.init's (convolution, dense) initialisers; biases keep Gluon's zero, batch norms their own.
#: torchvision's: He-normal over fan-out with ReLU's gain (MSRAPrelu with slope 0), and N(0, 0.01)
INITIALISERS = {"xavier": (XAVIER, XAVIER),
                "torchvision": (mx.init.MSRAPrelu(factor_type="out", slope=0.0), mx.init.Normal(0.01))}


def _kind(layer) -> str:
    if isinstance(layer, nn.Activation):
        return "relu"
    return {nn.HybridSequential: "block", nn.Flatten: "flatten", nn.Dense: "dense",
            nn.Dropout: "dropout"}[type(layer)]


class LocalResponseNorm(nn.HybridBlock):
    """AlexNet's local response normalisation across channels (common/normalization.py) on MXNet's ``LRN``
    operator, which divides alpha by the window size; Gluon has no such layer, and the operator is a legacy
    (ndarray) one, so the array goes through that API and back."""

    def hybrid_forward(self, F, x):
        lrn = PAPER_LRN
        return F.LRN(x.as_nd_ndarray(), alpha=lrn.alpha_per_size, beta=lrn.beta, knorm=lrn.k,
                     nsize=lrn.size).as_np_ndarray()


# The batch-norm counter below is state, not an input of the graph; a hybridized block warns about it.
warnings.filterwarnings("ignore", r"Parameter (\w+num_batches_tracked(, )?)+ is not used by any computation")


class BatchNorm(nn.BatchNorm):
    """Gluon's BatchNorm with PyTorch's epsilon and momentum (common/normalization.py), and PyTorch's
    ``num_batches_tracked``. MXNet updates the running statistics in the backward pass and with the biased
    variance; :func:`finish_batch_norms` after ``backward`` makes that PyTorch's update."""

    def __init__(self, channels: int) -> None:
        super().__init__(momentum=TORCH_BN.decay, epsilon=TORCH_BN.eps, in_channels=channels)
        self.num_batches_tracked = self.params.get("num_batches_tracked", shape=(1,), dtype="int64",
                                                   init=mx.init.Zero(), grad_req="null",
                                                   differentiable=False)

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var, num_batches_tracked):
        return super().hybrid_forward(F, x, gamma, beta, running_mean, running_var)


def vgg_block(num_convs: int, out_channels: int, in_channels: int = 1,
              layers: Sequence[int | str] | None = None, batch_norm: bool = False,
              init: str = "xavier") -> nn.HybridSequential:
    """``num_convs`` convolutions (3x3 unless ``layers`` gives 1; padding keeps the size) each followed by
    batch normalisation if ``batch_norm``, then ReLU (fused into the convolution without), and by local
    response normalisation where ``layers`` has ``"lrn"``; then 2x2 max pooling. ``init``: the kernels'
    ModelConfig.init."""
    block = nn.HybridSequential()
    kinds = block_layers(num_convs, layers)
    check_batch_norm(batch_norm, kinds)
    for k in kinds:
        if k == LRN:
            block.add(LocalResponseNorm())
            continue
        if batch_norm:
            block.add(nn.Conv2D(out_channels, kernel_size=k, padding=k // 2, in_channels=in_channels),
                      BatchNorm(out_channels), nn.Activation("relu"))
        else:
            block.add(nn.Conv2D(out_channels, kernel_size=k, padding=k // 2, activation="relu",
                                in_channels=in_channels))
        in_channels = out_channels
    block.add(nn.MaxPool2D(pool_size=2, strides=2))
    block.initialize(INITIALISERS[init][0])  # built like the other backends' blocks: parameters exist on return
    return block


class VGG(Configured, nn.HybridSequential):
    """VGG as a hybridizable ``nn.HybridSequential`` (NCHW); its arguments, their checks and
    its layers are :class:`~common.core.config.ModelConfig`'s, kept as ``model.config``."""

    def __init__(self, arch: Arch | ModelConfig, *args, **options) -> None:
        config = ModelConfig.of(arch, *args, **options)
        arch, dropout, batch_norm, hidden = config.arch, config.dropout, config.batch_norm, config.hidden
        capability.announce(NAME, config.precision)  # fp32 only: refuses the others, and says why
        super().__init__()
        mx.random.seed(config.seed)  # Gluon initialisers draw from MXNet's global generator
        channels = config.in_channels
        for block in arch:
            self.add(vgg_block(*block[:2], channels, layers_of(block), batch_norm, config.init))
            channels = block[1]
        flat = channels * feature_size(arch, config.image_size) ** 2
        head = [nn.Flatten(),
                nn.Dense(hidden, in_units=flat), nn.Activation("relu"), nn.Dropout(dropout),
                nn.Dense(hidden, in_units=hidden), nn.Activation("relu"), nn.Dropout(dropout),
                nn.Dense(config.num_classes, in_units=hidden)]
        for layer in head:
            layer.initialize(INITIALISERS[config.init][1])  # biases keep Gluon's default zero initialiser
        self.add(*head)
        self.config = config


def batch_norms(model: VGG) -> list[tuple[BatchNorm, int]]:
    """Every batch norm of ``model`` with the pixels per image it normalises (its block's side squared)."""
    side, found = model.image_size, []
    for block in model:
        if isinstance(block, nn.HybridSequential):
            found += [(layer, side * side) for layer in block if isinstance(layer, BatchNorm)]
            side //= 2
    return found


def running_variances(model: VGG) -> list[list]:
    """A copy of every batch norm's running variance on every context, taken before a training step."""
    return [[v.copy() for v in bn.running_var.list_data()] for bn, _ in batch_norms(model)]


def finish_batch_norms(model: VGG, before: list[list], batch: int) -> None:
    """After a training step's ``backward`` (``batch`` images per context): make MXNet's running-variance
    update PyTorch's (unbiased variance) and count the batch, on every context.

    MXNet's oneDNN BatchNorm updates its running statistics in its backward operator, which its engine does
    not count as writing them: the correction first waits for each batch norm's gradients (the same operator),
    and the next step waits for the correction. Without that, a backward that runs late (a resumed run under
    load) writes over the correction or loses its own update."""
    for (bn, pixels), old in zip(batch_norms(model), before, strict=True):
        for grad in bn.gamma.list_grad():
            grad.wait_to_read()
        for var, was in zip(bn.running_var.list_data(), old, strict=True):
            var[:] = unbiased_running_var(var, was, batch * pixels)
            var.wait_to_read()
        for count in bn.num_batches_tracked.list_data():
            count += 1


def layer_summary(model: VGG, input_shape: tuple[int, ...], verbose: bool = False) -> list[tuple[str, tuple]]:
    """``(kind, output_shape)`` of every top-level layer for a zero batch of ``input_shape`` (NCHW)."""
    summary.check_input_shape(input_shape, LAYOUT, model.in_channels, model.image_size)
    rows = summary.trace(list(model), mx.np.zeros(input_shape), _kind)
    if verbose:
        print(summary.format_summary(rows))
    return rows


def print_layer_summary(model: VGG, input_shape: tuple[int, ...]) -> None:
    """Print the book's table of output shapes."""
    layer_summary(model, input_shape, verbose=True)


def parameter_count(model: VGG) -> int:
    """Number of trainable parameters."""
    return sum(p.data().size for p in model.collect_params().values() if p.grad_req != "null")


def predict(model: VGG, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for NumPy ``images`` (N, C, H, W), dropout off (outside autograd.record), ``batch_size`` at a time."""
    return inference.predict_batches(model, images, LAYOUT, lambda x: model(mx.np.array(x)).asnumpy(), batch_size)


vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn = (builder(VGG, name) for name in BUILDERS)
