"""Image files in, model input out: decoded by Pillow, made grayscale, resized bilinearly exactly as the
Fashion-MNIST loader resizes (``common.data.batches.to_float``), in the model's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.core import layouts
from common.data import batches
from common.serving.optional import require

#: what a folder given to ``vgg predict`` is searched for (a file named explicitly may be any Pillow format)
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """A path that is not there or an image file that cannot be decoded."""


def expand(paths: list[str | Path]) -> list[Path]:
    """Files named, and the image files in folders named (sorted, not recursive), in order, without repeats."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            inside = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not inside:
                raise ImageError(f"{item}: no image files ({', '.join(SUFFIXES)}) in this folder")
            found += inside
        elif item.is_file():
            found.append(item)
        else:
            raise ImageError(f"{item}: no such file or folder")
    return list(dict.fromkeys(found))


def read(path: str | Path, channels: int = 1) -> np.ndarray:
    """uint8 pixels (H, W) for one channel (grayscale) or (H, W, 3) for three (RGB)."""
    Image = require("PIL.Image", "reading image files")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: cannot be decoded as an image ({exc})") from None


def to_input(pixels: list[np.ndarray], image_size: int, layout: str) -> np.ndarray:
    """float32 model input in [0, 1]: each image resized to ``image_size`` square, stacked, in ``layout``."""
    out = []
    for p in pixels:
        planes = p[None] if p.ndim == 2 else p.transpose(2, 0, 1)  # (C, H, W)
        out.append(batches.to_float(planes, image_size))
    nchw = np.stack(out)
    return layouts.images_from_nchw(nchw, layout)
