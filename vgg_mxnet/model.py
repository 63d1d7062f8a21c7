"""VGG in MXNet Gluon: NCHW, ``HybridSequential`` blocks, Xavier-uniform weights and zero biases."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common import inference, summary
from common.arch import LRN, Arch, block_layers, check_model_args, feature_size, layers_of
from common.normalization import PAPER_LRN
from vgg_mxnet.framework import gluon, mx

nn = gluon.nn
LAYOUT = "NCHW"
#: Xavier/Glorot uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), as torch, Keras and Flax use.
XAVIER = mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3)


def _kind(layer) -> str:
    if isinstance(layer, nn.Activation):
        return "relu"
    return {nn.HybridSequential: "block", nn.Flatten: "flatten", nn.Dense: "dense",
            nn.Dropout: "dropout"}[type(layer)]


class LocalResponseNorm(gluon.HybridBlock):
    """AlexNet's local response normalisation across channels (common/normalization.py) on MXNet's ``LRN``
    operator, which divides alpha by the window size; Gluon has no such layer, and the operator is a legacy
    (ndarray) one, so the array goes through that API and back."""

    def hybrid_forward(self, F, x):
        lrn = PAPER_LRN
        return F.LRN(x.as_nd_ndarray(), alpha=lrn.alpha_per_size, beta=lrn.beta, knorm=lrn.k,
                     nsize=lrn.size).as_np_ndarray()


def vgg_block(num_convs: int, out_channels: int, in_channels: int = 1,
              layers: Sequence[int | str] | None = None) -> nn.HybridSequential:
    """``num_convs`` convolutions (3x3 unless ``layers`` gives 1; padding keeps the size) with fused ReLU,
    and local response normalisation where ``layers`` has ``"lrn"``; then 2x2 max pooling."""
    block = nn.HybridSequential()
    for k in block_layers(num_convs, layers):
        if k == LRN:
            block.add(LocalResponseNorm())
            continue
        block.add(nn.Conv2D(out_channels, kernel_size=k, padding=k // 2, activation="relu",
                            in_channels=in_channels))
        in_channels = out_channels
    block.add(nn.MaxPool2D(pool_size=2, strides=2))
    block.initialize(XAVIER)  # built like the other backends' blocks: parameters exist on return
    return block


class VGG(nn.HybridSequential):
    """The blocks of ``arch``, flatten, then Dense(4096)-ReLU-Dropout-Dense(4096)-ReLU-Dropout-Dense."""

    def __init__(self, arch: Arch, num_classes: int = 10, in_channels: int = 1, image_size: int = 224,
                 dropout: float = 0.5, seed: int = 0) -> None:
        arch = check_model_args(arch, num_classes, in_channels, image_size, dropout)
        super().__init__()
        mx.random.seed(seed)  # Gluon initialisers draw from MXNet's global generator
        channels = in_channels
        for block in arch:
            self.add(vgg_block(*block[:2], channels, layers_of(block)))
            channels = block[1]
        flat = channels * feature_size(arch, image_size) ** 2
        hidden = summary.HIDDEN
        head = [nn.Flatten(),
                nn.Dense(hidden, in_units=flat), nn.Activation("relu"), nn.Dropout(dropout),
                nn.Dense(hidden, in_units=hidden), nn.Activation("relu"), nn.Dropout(dropout),
                nn.Dense(num_classes, in_units=hidden)]
        for layer in head:
            layer.initialize(XAVIER)  # biases keep Gluon's default zero initialiser
        self.add(*head)
        self.arch, self.num_classes, self.in_channels = arch, num_classes, in_channels
        self.image_size, self.dropout = image_size, dropout


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
