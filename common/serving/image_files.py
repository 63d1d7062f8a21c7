"""Image files in, model input out: decoded by Pillow (the formats listed here only), made grayscale,
resized bilinearly as the Fashion-MNIST loader resizes (``common.data.batches.to_float``), in the model's
layout. Pillow decodes a whole image before it can be shrunk, so an image whose header promises more than
``MAX_PIXELS`` pixels (after JPEG's draft scaling) is refused before any of it is decoded; the resize builds a
(size x side) matrix per axis, so a larger image is then box-averaged down to at most ``SHRINK_TO`` times the
model's input side: memory stays bounded whatever the file's dimensions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from common.core import layouts
from common.data import batches
from common.serving import formats
from common.serving.optional import require

#: the image formats read, by suffix, as Pillow names them: Pillow opens these and no other, whatever a file
#: is called (each of its other decoders would be one more parser of untrusted bytes)
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF",
           ".tiff": "TIFF", ".webp": "WEBP"}
#: what a folder given to ``vgg predict`` is searched for
SUFFIXES = tuple(FORMATS)
#: a side longer than this many times the model's input side is box-averaged down to it before the resize
SHRINK_TO = 4
#: the most pixels an image may decode to: 32 Mi pixels (a 48-megapixel JPEG decodes at 1/8 scale, a
#: 5792 x 5792 PNG whole) are 128 MiB at MAX_PIXEL_BYTES; a 173 KB PNG can promise 89 M pixels (1.8 GB decoded)
MAX_PIXELS = 32 * 2**20
#: the most bytes one decoded pixel may take: 8 bits x 4 channels (RGBA, CMYK) or one 32-bit channel (I, F)
MAX_PIXEL_BYTES = 4


class ImageError(ValueError):
    """A path that is not there or an image file that cannot be decoded."""


def expand(paths: list[str | Path]) -> list[Path]:
    """Files named, and the image files in folders named (sorted, not recursive), in order, without repeats."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            inside = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not inside:
                raise ImageError(f"{formats.shown(item)}: no image files ({', '.join(SUFFIXES)}) in this folder")
            found += inside
        elif item.is_file():
            found.append(item)
        else:
            raise ImageError(f"{formats.shown(item)}: no such file or folder")
    return list(dict.fromkeys(found))


def read(path: str | Path, channels: int = 1, size: int | None = None) -> np.ndarray:
    """uint8 pixels (H, W) for one channel (grayscale) or (H, W, 3) for three (RGB); with ``size`` (the
    model's input side), no side longer than ``SHRINK_TO * size``, so resizing them costs a bounded amount."""
    Image = require("PIL.Image", "reading image files")
    mode = "L" if channels == 1 else "RGB"
    names = sorted(set(FORMATS.values()))
    try:
        with Image.open(path, formats=names) as image:  # reads the header only
            if size:
                image.draft(mode, (SHRINK_TO * size,) * 2)  # JPEG: decode at 1/2, 1/4 or 1/8 scale where it can
            check_header(path, image.size, image.mode)
            image = image.convert(mode)
            return np.asarray(_shrink(image, SHRINK_TO * size) if size else image)
    except Image.UnidentifiedImageError:
        raise ImageError(f"{formats.shown(path)}: cannot be decoded as {', '.join(names)} (the formats read)") from None
    except ImageError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{formats.shown(path)}: cannot be decoded as an image ({formats.printable(exc, 200)})"
                         ) from None


def check_header(path: str | Path, size: tuple[int, int], mode: str) -> None:
    """Refuse an image of more than MAX_PIXELS pixels or MAX_PIXEL_BYTES a pixel, as its header says, before
    Pillow decodes it: decoding takes all of that memory at once."""
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(f"{formats.shown(path)}: {width} x {height} pixels, more than the {MAX_PIXELS:,} an image "
                         "may have (MAX_PIXELS); shrink it first")
    if _pixel_bytes(mode) > MAX_PIXEL_BYTES:
        raise ImageError(f"{formats.shown(path)}: its mode {formats.printable(mode, 40)!r} takes more than "
                         f"{MAX_PIXEL_BYTES} bytes a pixel (8 bits x 4 channels), or is not one Pillow describes")


def _pixel_bytes(mode: str) -> int:
    """Bytes one pixel of Pillow's ``mode`` takes decoded (more than MAX_PIXEL_BYTES for a mode it does not know)."""
    ImageMode = require("PIL.ImageMode", "reading image files")
    try:
        described = ImageMode.getmode(mode)
    except KeyError:
        return MAX_PIXEL_BYTES + 1
    return len(described.bands) * np.dtype(described.typestr).itemsize


def _shrink(image, limit: int):
    """``image`` box-averaged by whole factors per axis (Pillow's ``reduce``) until no side exceeds ``limit``."""
    factors = tuple(math.ceil(side / limit) for side in image.size)
    return image.reduce(factors) if factors != (1, 1) else image


def to_input(pixels: list[np.ndarray], image_size: int, layout: str) -> np.ndarray:
    """float32 model input in [0, 1]: each image resized to ``image_size`` square, stacked, in ``layout``."""
    out = []
    for p in pixels:
        planes = p[None] if p.ndim == 2 else p.transpose(2, 0, 1)  # (C, H, W)
        out.append(batches.to_float(planes, image_size))
    nchw = np.stack(out)
    return layouts.images_from_nchw(nchw, layout)
