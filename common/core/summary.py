"""The framework-neutral truth every backend is checked against: layer shapes, parameters, FLOPs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.core.arch import HIDDEN, LRN, ArchError, check_resolution, kernel_sizes, layers_of, validate
from common.core.layouts import shape_from_nchw

#: Top-level layers after the blocks, in order, as ``layer_summary`` names them in every backend.
HEAD_KINDS = ("flatten", "dense", "relu", "dropout", "dense", "relu", "dropout", "dense")
Shape = tuple[int, ...]


def check_input_shape(shape: Shape, layout: str, in_channels: int, image_size: int) -> Shape:
    """Check a batch shape against what a model expects; the error names both and the layout."""
    shape = tuple(int(s) for s in shape)
    expected = shape_from_nchw((in_channels, image_size, image_size), layout)
    if len(shape) == 4 and shape[1:] == expected and shape[0] > 0:
        return shape
    hint = ""
    other = "NHWC" if layout == "NCHW" else "NCHW"
    if len(shape) == 4 and shape[1:] == shape_from_nchw((in_channels, image_size, image_size), other):
        hint = f" (that is {other}; this backend takes {layout})"
    raise ValueError(
        f"input shape {shape} does not fit this model: expected (N, {', '.join(map(str, expected))}) "
        f"in {layout} layout{hint}")


def expected_summary(arch: object, input_shape: Shape, num_classes: int = 10,
                     hidden: int = HIDDEN) -> list[tuple[str, Shape]]:
    """``(kind, output_shape)`` of every top-level layer for an NCHW ``input_shape`` ((N,)C,H,W)."""
    blocks = validate(arch)
    *batch, channels, height, width = input_shape
    if height != width:
        raise ArchError(f"VGG here takes square images, got {height}x{width}")
    check_resolution(blocks, height)
    out: list[tuple[str, Shape]] = []
    for block in blocks:
        height //= 2
        channels = block[1]
        out.append(("block", (*batch, channels, height, height)))
    flat = channels * height * height
    features = (flat, hidden, hidden, hidden, hidden, hidden, hidden, num_classes)
    out += [(kind, (*batch, n)) for kind, n in zip(HEAD_KINDS, features)]
    return out


@dataclass(frozen=True)
class Layer:
    """One weighted layer: its name in the canonical (torchvision) numbering, weight shape, FLOPs."""

    name: str
    shape: tuple[int, ...]  # torchvision layout: (out, in, k, k), (out, in) or a batch norm's (channels,)
    flops: int  # forward, per example: multiply-accumulates x 2 (a batch norm: a scale and a shift per value)
    kind: str = "conv"  # "conv", "batch_norm" or "dense"

    @property
    def params(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n + self.shape[0]


def weighted_layers(arch: object, in_channels: int = 1, image_size: int = 224, num_classes: int = 10,
                    batch_norm: bool = False, hidden: int = HIDDEN) -> list[Layer]:
    """Every convolution, batch norm and dense layer with its parameter and forward-FLOP count."""
    blocks = validate(arch)
    size = check_resolution(blocks, image_size)
    layers: list[Layer] = []
    index = 0  # torchvision counts every conv, batch norm, ReLU and pool in ``features``
    cin = in_channels
    for block in blocks:
        cout = block[1]
        for k in layers_of(block):
            if k == LRN:  # no weights, but a place in torchvision-style numbering
                index += 1
                continue
            layers.append(Layer(f"features.{index}", (cout, cin, k, k), 2 * k * k * cin * cout * size * size))
            if batch_norm:
                layers.append(Layer(f"features.{index + 1}", (cout,), 2 * cout * size * size, "batch_norm"))
            cin = cout
            index += 3 if batch_norm else 2
        index += 1
        size //= 2
    dims = (cin * size * size, hidden, hidden, num_classes)
    for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(Layer(f"classifier.{3 * i}", (n_out, n_in), 2 * n_in * n_out, "dense"))
    return layers


def parameter_count(arch: object, in_channels: int = 1, image_size: int = 224, num_classes: int = 10,
                    batch_norm: bool = False, hidden: int = HIDDEN) -> int:
    """Number of trainable parameters (VGG-16, 3 channels, 224, 1000 classes: 138,357,544; with batch
    norm 138,365,992)."""
    return sum(layer.params for layer in weighted_layers(arch, in_channels, image_size, num_classes, batch_norm,
                                                         hidden))


def flop_count(arch: object, in_channels: int = 1, image_size: int = 224, num_classes: int = 10,
               training: bool = False, batch_norm: bool = False, hidden: int = HIDDEN) -> int:
    """FLOPs per example (multiply-accumulates x 2) of the forward pass, or x3 for a training step.

    Per-layer figures are in :func:`weighted_layers`. A training step counts the forward pass plus a
    backward pass of twice its cost, the usual convention.
    """
    forward = sum(layer.flops for layer in weighted_layers(arch, in_channels, image_size, num_classes, batch_norm,
                                                           hidden))
    return 3 * forward if training else forward


def flops_table(arch: object, in_channels: int = 1, image_size: int = 224, num_classes: int = 10,
                batch_norm: bool = False, hidden: int = HIDDEN) -> str:
    """Per layer: output shape (C, H, W), parameters and forward FLOPs per example, then the split between
    convolutional and fully connected layers (the book's exercise compares exactly that); batch norms count
    with the convolutional part."""
    blocks = validate(arch)
    every = weighted_layers(blocks, in_channels, image_size, num_classes, batch_norm, hidden)
    layers = iter(every)
    size = check_resolution(blocks, image_size)
    lines = ["| layer | canonical name | output shape | parameters | forward FLOPs |", "|---|---|---|---|---|"]
    for b, block in enumerate(blocks, 1):
        for k in layers_of(block):
            if k == LRN:
                lines.append(f"| LRN (block {b}) | | ({block[1]}, {size}, {size}) | 0 | |")
                continue
            layer = next(layers)
            lines.append(f"| conv{k}-{block[1]} (block {b}) | {layer.name} | ({block[1]}, {size}, {size}) | "
                         f"{layer.params:,} | {layer.flops:,} |")
            if batch_norm:
                layer = next(layers)
                lines.append(f"| batchnorm (block {b}) | {layer.name} | ({block[1]}, {size}, {size}) | "
                             f"{layer.params:,} | {layer.flops:,} |")
        size //= 2
        lines.append(f"| maxpool (block {b}) | | ({block[1]}, {size}, {size}) | 0 | 0 |")
    dense = list(layers)
    for layer in dense:
        width = layer.shape[0]
        lines.append(f"| fc-{width} | {layer.name} | ({width},) | {layer.params:,} | {layer.flops:,} |")
    conv = [layer for layer in every if layer.name.startswith("features.")]
    totals = {"convolutional": conv, "fully connected": dense}
    params, flops = sum(x.params for x in every), sum(x.flops for x in every)
    lines += ["", "| layers | parameters | share | forward FLOPs | share |", "|---|---|---|---|---|"]
    for label, group in totals.items():
        p, f = sum(x.params for x in group), sum(x.flops for x in group)
        lines.append(f"| {label} ({len(group)}) | {p:,} | {100 * p / params:.1f} % | {f:,} | {100 * f / flops:.1f} % |")
    lines.append(f"| all ({len(every)}) | {params:,} | 100 % | {flops:,} | 100 % |")
    return "\n".join(lines)


def family_table(configs: Mapping[str, object], in_channels: int = 3, image_size: int = 224,
                 num_classes: int = 1000) -> str:
    """One row per configuration and its batch-norm variant: weight layers (convolutions and dense layers,
    as the paper counts), parameters and forward FLOPs per example."""
    lines = ["| configuration | weight layers | 1x1 convolutions | parameters | with batch norm | forward GFLOPs "
             "| with batch norm |", "|---|---|---|---|---|---|---|"]
    for name, arch in configs.items():
        plain, bn = (weighted_layers(arch, in_channels, image_size, num_classes, b) for b in (False, True))
        ones = sum(k == 1 for block in validate(arch) for k in kernel_sizes(block))
        lrn = any(LRN in layers_of(block) for block in validate(arch))  # no VGG has both (arch.check_batch_norm)
        bn_params, bn_flops = ("—", "—") if lrn else (f"{sum(x.params for x in bn):,}",
                                                     f"{sum(x.flops for x in bn) / 1e9:.2f}")
        lines.append(f"| {name} | {len(plain)} | {ones} | {sum(x.params for x in plain):,} | {bn_params} | "
                     f"{sum(x.flops for x in plain) / 1e9:.2f} | {bn_flops} |")
    return "\n".join(lines)


def format_summary(rows: list[tuple[str, Shape]]) -> str:
    """The book's table: one ``kind output shape: (...)`` line per top-level layer."""
    return "\n".join(f"{kind:<8} output shape:\t{tuple(shape)}" for kind, shape in rows)


def trace(layers, x, kind_of, shape_of=lambda y: tuple(y.shape)) -> list[tuple[str, Shape]]:
    """Run ``x`` through ``layers`` one by one, recording ``(kind_of(layer), output shape)``."""
    rows = []
    for layer in layers:
        x = layer(x)
        rows.append((kind_of(layer), tuple(int(s) for s in shape_of(x))))
    return rows
