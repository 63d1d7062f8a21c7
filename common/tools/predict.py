"""``vgg predict``: classify image files with any model file, a batch at a time, top-k classes each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common.serving import formats, image_files
from common.tools.models import Opened, probabilities


def check_input(opened: Opened, batch: np.ndarray) -> None:
    """Refuse a batch whose shape the model does not take (one line naming both shapes)."""
    want = opened.meta["input_shape"][1:]
    if list(batch.shape[1:]) != list(want):
        raise ValueError(f"{opened.path} takes input (batch, {', '.join(map(str, want))}) in "
                         f"{opened.layout}, but the images were prepared as {tuple(batch.shape[1:])}")


def check_classes(opened: Opened, logits: int) -> None:
    """Refuse a model whose metadata names another number of classes than it has logits."""
    if logits != len(opened.meta["classes"]):
        raise formats.ModelFileError(f"{opened.path}: its metadata names {len(opened.meta['classes'])} classes, "
                                     f"but the model gives {logits} logits")


def classify(opened: Opened, files: list[Path], top: int = 3, batch_size: int = 64,
             progress: bool = True) -> Iterator[dict]:
    """For every file in order: ``{"file", "shown", "top": [{"class", "index", "probability"}, ...]}``:
    ``file`` the path as given (for JSON, which escapes it), ``shown`` it escaped for text output
    (:func:`formats.shown`); class names come from the model file, so they reach the terminal without
    control characters."""
    classes = [formats.printable(name, 200) for name in opened.meta["classes"]]
    top = max(1, min(top, len(classes)))
    with tqdm(total=len(files), unit="image", desc="vgg predict", disable=not progress or len(files) < 2,
              leave=False) as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            pixels = [image_files.read(f, opened.in_channels, opened.image_size) for f in chunk]
            batch = image_files.to_input(pixels, opened.image_size, opened.layout)
            check_input(opened, batch)
            probs = probabilities(opened.forward(batch))
            check_classes(opened, probs.shape[-1])
            for f, p in zip(chunk, probs):
                best = np.argsort(-p, kind="stable")[:top]
                yield {"file": str(f), "shown": formats.shown(f),
                       "top": [{"class": classes[i], "index": int(i), "probability": float(p[i])} for i in best]}
            bar.update(len(chunk))
