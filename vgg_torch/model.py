"""VGG in PyTorch: NCHW, ``nn.Sequential`` blocks, Xavier-uniform weights and zero biases."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from common.core import backends, precision, summary
from common.core.arch import BUILDERS, LRN, Arch, block_layers, builder, check_batch_norm, feature_size, layers_of
from common.core.config import Configured, ModelConfig
from common.core.normalization import PAPER_LRN, TORCH_BN
from common.runtime import capability, inference
from vgg_torch import distributed as dist, framework

NAME = "torch"
LAYOUT = backends.BACKENDS[NAME].layout
_KINDS = {nn.Sequential: "block", nn.Flatten: "flatten", nn.Linear: "dense", nn.ReLU: "relu",
          nn.Dropout: "dropout"}


def vgg_block(num_convs: int, out_channels: int, in_channels: int = 1,
              layers: Sequence[int | str] | None = None, batch_norm: bool = False) -> nn.Sequential:
    """``num_convs`` convolutions (3x3 unless ``layers`` gives 1; padding keeps the size) each followed by
    batch normalisation if ``batch_norm``, then ReLU, and by local response normalisation where ``layers``
    has ``"lrn"``; then 2x2 max pooling. The block's last ReLU runs after the pooling: max and ReLU commute
    (same values and gradients) and the ReLU then touches a quarter of the elements."""
    modules: list[nn.Module] = []
    kinds = block_layers(num_convs, layers)
    check_batch_norm(batch_norm, kinds)
    for k in kinds:
        if k == LRN:  # PyTorch divides alpha by the window size
            modules.append(nn.LocalResponseNorm(PAPER_LRN.size, PAPER_LRN.alpha_per_size, PAPER_LRN.beta, PAPER_LRN.k))
            continue
        modules.append(nn.Conv2d(in_channels, out_channels, kernel_size=k, padding=k // 2))
        if batch_norm:
            modules.append(nn.BatchNorm2d(out_channels, eps=TORCH_BN.eps, momentum=TORCH_BN.momentum))
        modules.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    pool = nn.MaxPool2d(kernel_size=2, stride=2)
    if isinstance(modules[-1], nn.ReLU):
        modules.insert(len(modules) - 1, pool)
    else:  # after an LRN
        modules.append(pool)
    return nn.Sequential(*modules)


def initialise(layer: nn.Conv2d | nn.Linear, init: str) -> None:
    """``layer``'s weights as ``init`` (ModelConfig.init) draws them, its bias zero."""
    if init == "torchvision" and isinstance(layer, nn.Conv2d):
        nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    elif init == "torchvision":
        nn.init.normal_(layer.weight, 0.0, 0.01)
    else:
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)  # type: ignore[arg-type]  # every layer is built with a bias


class VGG(Configured, nn.Sequential):
    """VGG as an ``nn.Sequential`` (channels-last memory, NCHW logically); its arguments, their checks and
    its layers are :class:`~common.core.config.ModelConfig`'s, kept as ``model.config``."""

    def __init__(self, arch: Arch | ModelConfig, *args, **options) -> None:
        config = ModelConfig.of(arch, *args, **options)
        arch, dropout, batch_norm, hidden = config.arch, config.dropout, config.batch_norm, config.hidden
        with torch.random.fork_rng(devices=[]):  # seed the init without touching the global RNG
            torch.manual_seed(config.seed)
            blocks, channels = [], config.in_channels
            for block in arch:
                blocks.append(vgg_block(*block[:2], channels, layers_of(block), batch_norm))
                channels = block[1]
            flat = channels * feature_size(arch, config.image_size) ** 2
            super().__init__(
                *blocks, nn.Flatten(),
                nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden, config.num_classes))
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    initialise(module, config.init)
        # The logical layout stays NCHW; channels-last memory is oneDNN's (and cuDNN's tensor cores') native
        # convolution layout, so no reorder runs around each convolution.
        self.to(device=device(), memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in the stubs
        self.config = config
        capability.announce(NAME, config.precision, dist.current().device)


def layer_summary(model: VGG, input_shape: tuple[int, ...], verbose: bool = False) -> list[tuple[str, tuple]]:
    """``(kind, output_shape)`` of every top-level layer for a zero batch of ``input_shape`` (NCHW)."""
    summary.check_input_shape(input_shape, LAYOUT, model.in_channels, model.image_size)
    with torch.no_grad():
        rows = summary.trace(model, torch.zeros(input_shape), lambda layer: _KINDS[type(layer)])
    if verbose:
        print(summary.format_summary(rows))
    return rows


def print_layer_summary(model: VGG, input_shape: tuple[int, ...]) -> None:
    """Print the book's table of output shapes."""
    layer_summary(model, input_shape, verbose=True)


def parameter_count(model: VGG) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def device() -> torch.device:
    """Where this process's models and batches live: its CUDA device under ``--device gpu`` (one per
    process, as DDP runs), else the CPU."""
    world = dist.current()
    return torch.device("cuda", torch.cuda.current_device()) if world.device == "gpu" else torch.device("cpu")


@contextlib.contextmanager
def computing(model: VGG) -> Iterator[None]:
    """The model's precision around a forward pass: ``torch.autocast`` to bf16 or fp16 for convolutions and
    products (float32 weights stay the master copy), and TensorFloat-32 products on a GPU only for tf32."""
    p = precision.get(model.config.precision)
    framework.set_tf32(p.name == "tf32")
    if not p.mixed:
        yield
        return
    with torch.autocast(device().type, dtype=getattr(torch, p.compute)):
        yield


def predict(model: VGG, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits (float32) for NumPy ``images`` (N, C, H, W), dropout off, computed ``batch_size`` at a time."""
    model.eval()
    where = next(model.parameters()).device

    def forward(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x).to(where)).float().cpu().numpy()

    with torch.inference_mode(), computing(model):
        return inference.predict_batches(model, images, LAYOUT, forward, batch_size)


vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn = (builder(VGG, name) for name in BUILDERS)
