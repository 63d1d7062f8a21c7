"""VGG architectures as data (Simonyan & Zisserman 2014, Table 1) and their validation.

An arch is a tuple of ``(num_convs, out_channels)`` per block, as in *Dive into Deep Learning*: every
convolution 3x3. A block may spell out its layers, ``(num_convs, out_channels, layers)``: the kernel size of
each convolution (3 or 1: configuration C's ``conv1-256`` as the last layer of blocks 3-5), with ``"lrn"``
after a convolution for local response normalisation after its ReLU (configuration A-LRN; see
common/normalization.py). Validation keeps the book's pair wherever every layer is a 3x3 convolution.
Batch normalisation is not part of an arch but a model option (``batch_norm=True``, the ``_bn`` names), as
in torchvision's ``make_layers``; so is the width of the classifier's hidden layers (``hidden``, 4096).
Every block ends in a 2x2 max pool with stride 2, so an arch of ``n`` blocks needs inputs of at least
``2**n`` pixels per side.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Iterable
from dataclasses import fields
from typing import Any, Final, Literal, TypeGuard

LRN: Final = "lrn"
#: a layer of a block before its pooling: a convolution's kernel size, or LRN after a convolution
Layer = int | Literal["lrn"]
Block = tuple[int, int] | tuple[int, int, tuple[Layer, ...]]
Arch = tuple[Block, ...]
#: kernel sizes a convolution may have (Table 1 has 3x3 and, in configuration C, 1x1); padding keeps the size
KERNEL_SIZES = (1, 3)

A: Arch = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
A_LRN: Arch = ((1, 64, (3, LRN)), (1, 128), (2, 256), (2, 512), (2, 512))
B: Arch = ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512))
C: Arch = ((2, 64), (2, 128), (3, 256, (3, 3, 1)), (3, 512, (3, 3, 1)), (3, 512, (3, 3, 1)))
D: Arch = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
E: Arch = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))
VGG11, VGG13, VGG16, VGG19 = A, B, D, E  # torchvision's names for the configurations it has

#: Table 1's configurations by letter, and torchvision's names for A, B, D and E
CONFIGS: dict[str, Arch] = {"A": A, "A_LRN": A_LRN, "B": B, "C": C, "D": D, "E": E}
NAMED: dict[str, Arch] = {"vgg11": VGG11, "vgg13": VGG13, "vgg16": VGG16, "vgg19": VGG19}
TINY: Arch = ((1, 8), (1, 16))  # two blocks, for quick checks (tests, parity) at 32x32 and up
#: the width of the classifier's two hidden dense layers in the paper and the book; ``hidden=`` narrows it
HIDDEN = 4096


class ArchError(ValueError):
    """An arch, ratio or input resolution that cannot make a VGG network."""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


BN = "_bn"  # a name's suffix for the same arch with batch normalisation after every convolution
_PLAIN = (*NAMED, *CONFIGS, "small", "tiny")
#: the names parse knows (no A_LRN_bn: see check_batch_norm)
CHOICES = tuple(name for plain in _PLAIN for name in (plain, plain + BN) if name != "A_LRN" + BN)
#: torchvision's builders: name -> (arch, batch_norm)
BUILDERS: dict[str, tuple[Arch, bool]] = {name + suffix: (blocks, bool(suffix))
                                          for name, blocks in NAMED.items() for suffix in ("", BN)}


def _layers(i: int, arch: object, num_convs: int, layers: object) -> tuple[Layer, ...]:
    expected = (f"expected {num_convs} kernel size(s) of {' or '.join(map(str, KERNEL_SIZES))}, each convolution "
                f"optionally followed by {LRN!r}")
    if not isinstance(layers, Iterable):
        raise ArchError(f"block {i} of arch {arch!r} has layers {layers!r}: {expected}")
    items: tuple[object, ...] = tuple(layers)
    convs = [x for x in items if x != LRN]
    ok = (len(convs) == num_convs and all(_is_int(k) and k in KERNEL_SIZES for k in convs)
          and all(x != LRN or (j and items[j - 1] != LRN) for j, x in enumerate(items)))
    if not ok:
        raise ArchError(f"block {i} of arch {arch!r} has layers {items!r}: {expected}")
    return tuple(LRN if x == LRN else int(x) for x in items)  # type: ignore[call-overload]  # checked above


def validate(arch: object) -> Arch:
    """Return ``arch`` as a tuple of blocks, ``(num_convs, out_channels)`` or, where a layer is not a 3x3
    convolution, ``(num_convs, out_channels, layers)``; or raise ArchError saying what is wrong."""
    try:
        blocks: tuple[tuple[Any, ...], ...] = tuple(tuple(block) for block in arch)  # type: ignore[attr-defined]
    except TypeError:
        raise ArchError(f"arch must be a sequence of (num_convs, out_channels) pairs, got {arch!r}") from None
    if not blocks:
        raise ArchError("arch is empty: give at least one (num_convs, out_channels) block")
    out = []
    for i, block in enumerate(blocks):
        if len(block) not in (2, 3):
            raise ArchError(f"block {i} of arch {arch!r} is {block!r}: expected a (num_convs, out_channels) pair, "
                            "or (num_convs, out_channels, layers)")
        for name, value in zip(("num_convs", "out_channels"), block):
            if not _is_int(value) or value <= 0:
                raise ArchError(
                    f"block {i} of arch {arch!r} has {name}={value!r}: it must be a positive integer")
        n, c = int(block[0]), int(block[1])
        layers = _layers(i, arch, n, block[2]) if len(block) == 3 else (3,) * n
        out.append((n, c) if layers == (3,) * n else (n, c, layers))
    return tuple(out)


def layers_of(block: Block) -> tuple[Layer, ...]:
    """Every layer of a validated block before its pooling: kernel sizes, and ``"lrn"`` after a convolution."""
    return block[2] if len(block) == 3 else (3,) * block[0]


def kernel_sizes(block: Block) -> tuple[int, ...]:
    """The kernel size of every convolution of a validated block."""
    return tuple(x for x in layers_of(block) if isinstance(x, int))


def last_of_block(arch: object) -> list[bool]:
    """Per convolution of ``arch``, in order: whether it is its block's last (its output feeds the max pool)."""
    counts = [len(kernel_sizes(block)) for block in validate(arch)]
    return [j == n - 1 for n in counts for j in range(n)]


def block_layers(num_convs: object, layers: object = None) -> tuple[Layer, ...]:
    """A backend ``vgg_block``'s layers: ``layers`` (default all 3x3 convolutions) checked against ``num_convs``."""
    block = (num_convs, 1) if layers is None else (num_convs, 1, layers)
    return layers_of(validate((block,))[0])


def small(arch: object = VGG11, ratio: int = 4) -> Arch:
    """The book's training net: ``arch`` with every channel count divided by ``ratio``.

    ``small()`` is ``((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))``.
    """
    blocks = validate(arch)
    if not _is_int(ratio) or ratio <= 0:
        raise ArchError(f"ratio must be a positive integer, got {ratio!r}")
    for block in blocks:
        if block[1] // ratio == 0:
            raise ArchError(
                f"ratio {ratio} rounds the {block[1]} channels of arch {blocks} to 0; "
                f"the largest ratio that works is {min(b[1] for b in blocks)}")
    return tuple((b[0], b[1] // ratio, *b[2:]) for b in blocks)


def parse(name: str) -> tuple[Arch, bool]:
    """``(arch, batch_norm)`` of a name: any :func:`by_name` name, with ``_bn`` for batch normalisation
    (``vgg16_bn``, ``small_bn``, ``C_bn``)."""
    if name.lower().endswith(BN) and name[:-len(BN)]:
        try:
            blocks = by_name(name[:-len(BN)])
        except ArchError:
            raise ArchError(f"unknown arch {name!r}; choose one of {', '.join(CHOICES)}") from None
        check_batch_norm(True, tuple(x for block in blocks for x in layers_of(block)))
        return blocks, True
    return by_name(name), False


def by_name(name: str) -> Arch:
    """Look up Table 1's ``A|A_LRN|B|C|D|E``, ``vgg11|vgg13|vgg16|vgg19`` (A, B, D, E), ``small`` (the book's
    ``small(A, 4)``) or ``tiny``."""
    if name in CONFIGS:
        return CONFIGS[name]
    key = name.lower()
    if key == "small":
        return small()
    if key == "tiny":
        return TINY
    if key not in NAMED:
        raise ArchError(f"unknown arch {name!r}; choose one of {', '.join(CHOICES)}")
    return NAMED[key]


def name_of(arch: Arch, batch_norm: bool = False) -> str:
    """A short name for messages: ``vgg11``, ``C``, ``small_bn`` or the tuple itself."""
    for name, known in [*NAMED.items(), *CONFIGS.items(), ("small", small()), ("tiny", TINY)]:
        if arch == known:
            return name + (BN if batch_norm else "")
    return str(arch) + (" with batch norm" if batch_norm else "")


def min_resolution(arch: object) -> int:
    """The smallest square input side that survives every 2x2 pooling of ``arch``."""
    return 2 ** len(validate(arch))


def check_resolution(arch: object, image_size: object) -> int:
    """Raise ArchError unless ``image_size`` is a positive int the blocks do not halve below 1 pixel."""
    blocks = validate(arch)
    smallest = min_resolution(blocks)
    if not _is_int(image_size) or image_size <= 0:
        raise ArchError(f"image_size must be a positive integer, got {image_size!r}")
    if image_size < smallest:
        raise ArchError(
            f"arch {name_of(blocks)} has {len(blocks)} blocks, each halving the image: "
            f"a {image_size}x{image_size} input shrinks to nothing; the smallest resolution that works is "
            f"{smallest}x{smallest}")
    return int(image_size)


def feature_size(arch: object, image_size: int) -> int:
    """Side of the feature map after all blocks (each 2x2/2 pool floors)."""
    size = check_resolution(arch, image_size)
    for _ in validate(arch):
        size //= 2
    return size


def check_batch_norm(batch_norm: object, layers: tuple = ()) -> bool:
    """``batch_norm`` as a bool, or ArchError: a string such as "false" would silently mean True. Batch norm
    and LRN together are refused: no VGG has both (the paper's LRN predates batch norm, torchvision has no
    LRN), and MXNet 1.9.1's oneDNN backward of convolution -> batch norm -> ReLU -> LRN is wrong by ~1e-3."""
    if not isinstance(batch_norm, bool):
        raise ArchError(f"batch_norm must be True or False, got {batch_norm!r}")
    if batch_norm and LRN in layers:
        raise ArchError("batch_norm=True with local response normalisation ('lrn') is not a VGG: the paper's "
                        "A-LRN has no batch norm and torchvision's _bn models have no LRN; choose one")
    return batch_norm


def check_model_args(arch: object, num_classes: object, in_channels: object, image_size: object,
                     dropout: object, batch_norm: object = False, hidden: object = HIDDEN) -> Arch:
    """Validate every ``VGG(...)`` argument the same way in all four backends; return the arch."""
    blocks = validate(arch)
    check_batch_norm(batch_norm, tuple(x for block in blocks for x in layers_of(block)))
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("hidden", hidden)):
        if not _is_int(value) or value <= 0:
            raise ArchError(f"{name} must be a positive integer, got {value!r}")
    check_resolution(blocks, image_size)
    if not isinstance(dropout, numbers.Real) or not 0 <= float(dropout) < 1:
        raise ArchError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    return blocks


def builder(model_class, name: str):
    """torchvision's ``vgg11`` ... ``vgg19_bn`` for a backend's ``VGG`` class: the name fixes the arch and batch
    norm, and every other ModelConfig field is an argument, in the config's order and with its default (10
    classes, 1 channel, 224x224); ``in_channels=3, num_classes=1000`` is torchvision's model."""
    from common.core.config import ModelConfig  # config.py builds on this module, so it is imported here

    blocks, batch_norm = BUILDERS[name]
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature([inspect.Parameter(f.name, kind, default=f.default)
                                   for f in fields(ModelConfig) if f.name not in ("arch", "batch_norm")])

    def build(*args, **options):
        return model_class(ModelConfig(blocks, batch_norm=batch_norm, **signature.bind(*args, **options).arguments))

    build.__signature__ = signature  # type: ignore[attr-defined]
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"VGG configuration {next(k for k, v in CONFIGS.items() if v == blocks)}"
                     f"{' with batch normalisation' if batch_norm else ''} (torchvision's {name}).")
    return build
