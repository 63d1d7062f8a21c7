"""VGG architectures as data (Simonyan & Zisserman 2014, Table 1) and their validation.

An arch is a tuple of ``(num_convs, out_channels)`` per block, as in *Dive into Deep Learning*.
Every block ends in a 2x2 max pool with stride 2, so an arch of ``n`` blocks needs inputs of at
least ``2**n`` pixels per side.
"""

from __future__ import annotations

import numbers

Arch = tuple[tuple[int, int], ...]

VGG11: Arch = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))  # configuration A
VGG13: Arch = ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512))  # configuration B
VGG16: Arch = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))  # configuration D
VGG19: Arch = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))  # configuration E

NAMED: dict[str, Arch] = {"vgg11": VGG11, "vgg13": VGG13, "vgg16": VGG16, "vgg19": VGG19}
TINY: Arch = ((1, 8), (1, 16))  # two blocks, for quick checks (tests, parity) at 32x32 and up


class ArchError(ValueError):
    """An arch, ratio or input resolution that cannot make a VGG network."""


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


CHOICES = (*NAMED, "small", "tiny")  # the names by_name knows


def validate(arch: object) -> Arch:
    """Return ``arch`` as a tuple of ``(int, int)`` pairs, or raise ArchError saying what is wrong."""
    try:
        blocks = tuple(tuple(block) for block in arch)  # type: ignore[union-attr]
    except TypeError:
        raise ArchError(f"arch must be a sequence of (num_convs, out_channels) pairs, got {arch!r}") from None
    if not blocks:
        raise ArchError("arch is empty: give at least one (num_convs, out_channels) block")
    for i, block in enumerate(blocks):
        if len(block) != 2:
            raise ArchError(f"block {i} of arch {arch!r} is {block!r}: expected a (num_convs, out_channels) pair")
        for name, value in zip(("num_convs", "out_channels"), block):
            if not _is_int(value) or value <= 0:
                raise ArchError(
                    f"block {i} of arch {arch!r} has {name}={value!r}: it must be a positive integer")
    return tuple((int(n), int(c)) for n, c in blocks)


def small(arch: object = VGG11, ratio: int = 4) -> Arch:
    """The book's training net: ``arch`` with every channel count divided by ``ratio``.

    ``small()`` is ``((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))``.
    """
    blocks = validate(arch)
    if not _is_int(ratio) or ratio <= 0:
        raise ArchError(f"ratio must be a positive integer, got {ratio!r}")
    out = tuple((n, c // ratio) for n, c in blocks)
    for (n, c), (_, reduced) in zip(blocks, out):
        if reduced == 0:
            raise ArchError(
                f"ratio {ratio} rounds the {c} channels of arch {blocks} to 0; "
                f"the largest ratio that works is {min(c for _, c in blocks)}")
    return out


def by_name(name: str) -> Arch:
    """Look up ``vgg11|vgg13|vgg16|vgg19|small|tiny`` (small = the book's ``small(VGG11, 4)``)."""
    key = name.lower()
    if key == "small":
        return small()
    if key == "tiny":
        return TINY
    if key not in NAMED:
        raise ArchError(f"unknown arch {name!r}; choose one of {', '.join(CHOICES)}")
    return NAMED[key]


def name_of(arch: Arch) -> str:
    """A short name for messages: ``vgg11``, ``small`` or the tuple itself."""
    for name, known in [*NAMED.items(), ("small", small()), ("tiny", TINY)]:
        if arch == known:
            return name
    return str(arch)


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


def check_model_args(arch: object, num_classes: object, in_channels: object, image_size: object,
                     dropout: object) -> Arch:
    """Validate every ``VGG(...)`` argument the same way in all four backends; return the arch."""
    blocks = validate(arch)
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if not _is_int(value) or value <= 0:
            raise ArchError(f"{name} must be a positive integer, got {value!r}")
    check_resolution(blocks, image_size)
    if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ArchError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    return blocks
