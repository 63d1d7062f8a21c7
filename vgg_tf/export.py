"""TensorFlow serving exports through Keras's ``model.export``: a SavedModel (TF Serving's format; its
``serve`` endpoint) and ONNX (tf2onnx underneath), both with a dynamic batch axis and NHWC input."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from common.core import atomic
from common.serving import export_flow, formats
from common.serving.optional import require
from vgg_tf.framework import tf
from vgg_tf.model import LAYOUT, NAME, VGG, predict
from vgg_tf.weights import export_weights, import_weights

#: tf2onnx 1.17's newest opset
ONNX_OPSET = 18


def _signature(model: VGG) -> list:
    s = model.image_size
    return [tf.TensorSpec((None, s, s, model.in_channels), tf.float32, name=formats.INPUT)]


def _write_native(model: VGG, path: Path, meta: dict) -> None:
    model.export(str(path), format="tf_saved_model", input_signature=_signature(model), verbose=False)
    atomic.write_text(path / "assets.extra" / formats.METADATA_FILE, formats.dumps(meta))


def _write_onnx(model: VGG, path: Path, meta: dict) -> None:
    require("tf2onnx", "Keras's ONNX export")
    model.export(str(path), format="onnx", input_signature=_signature(model), opset_version=ONNX_OPSET,
                 verbose=False)


def load_exported(path: str | Path) -> tuple[export_flow.Forward, dict]:
    """``(forward, metadata)`` of a SavedModel written by :func:`export`: forward maps NHWC images to logits."""
    path = Path(path)
    meta_file = path / "assets.extra" / formats.METADATA_FILE
    if not meta_file.is_file():
        raise formats.ModelFileError(f"{path} is not a SavedModel written by vgg export (no {meta_file.name})")
    meta = formats.loads(meta_file.read_text(), path)
    try:
        saved = tf.saved_model.load(str(path))
    except Exception as exc:  # a truncated or foreign folder
        raise formats.ModelFileError(f"{path} is not a readable SavedModel ({type(exc).__name__}: "
                                     f"{str(exc)[:200]})") from None
    # the closure keeps `saved` alive: its functions refer to variables it owns
    return lambda images: saved.serve(tf.constant(images, tf.float32)).numpy(), meta


def export(model: VGG, path: str | Path, format: str = "native",
           images: np.ndarray | None = None) -> export_flow.Exported:
    """Write ``model`` for serving (``format`` native: a ``.savedmodel`` folder; onnx: ``.onnx``), reload it
    and check it against the live model on ``images`` (NHWC; default a fixed random batch) before it
    appears at ``path``."""
    model = export_flow.float32_master(model, VGG, export_weights, import_weights)
    writers = {"native": functools.partial(_write_native, model), "onnx": functools.partial(_write_onnx, model)}
    return export_flow.run(model, path, format, NAME, LAYOUT, writers, lambda p: load_exported(p)[0],
                    lambda x: predict(model, x), images)
