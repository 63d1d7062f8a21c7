"""JAX serving exports: ``jax.export`` serialized StableHLO (weights inside, symbolic batch axis; runs on
JAX releases up to six months newer) and ONNX, both with NHWC input.

ONNX goes through jax2onnx where JAX is 0.7.2 or newer (it needs NumPy 2), and through jax2tf's plain-TF
lowering plus tf2onnx on JAX 0.7.1, the release the ``numpy<2`` environment holds, which jax2onnx does not
support and whose jax2tf still has that lowering (it was removed after 0.7.1). jax2onnx 0.17.1 converts
nested ``jit`` calls (``jax.nn.relu`` is one) with ``jax.core.ClosedJaxpr``, which JAX 0.12 removed; tracing
under ``jax.disable_jit()`` inlines them, so that converter path is never taken.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from common.core import atomic
from common.serving import export_flow, formats
from common.serving.optional import require
from vgg_jax.model import LAYOUT, NAME, VGG, predict
from vgg_jax.weights import export_weights, import_weights

_BLOB = "exported.bin"
#: tf2onnx 1.17's newest opset (the jax2tf route); jax2onnx writes its own default
TF2ONNX_OPSET = 18


def _jax2onnx_route() -> bool:
    return tuple(int(p) for p in jax.__version_info__[:3]) >= (0, 7, 2)


def _forward(model: VGG):
    return lambda images: model(images)


def _write_native(model: VGG, path: Path, meta: dict) -> None:
    batch, = jax_export.symbolic_shape("batch")
    s, c = model.image_size, model.in_channels
    exported = jax_export.export(jax.jit(_forward(model)), platforms=("cpu", "cuda"))(
        jax.ShapeDtypeStruct((batch, s, s, c), jnp.float32))
    path.mkdir()
    atomic.write_bytes(path / _BLOB, exported.serialize())
    atomic.write_text(path / formats.METADATA_FILE, formats.dumps(meta))


def _write_onnx(model: VGG, path: Path, meta: dict) -> None:
    s, c = model.image_size, model.in_channels
    if _jax2onnx_route():
        jax2onnx = require("jax2onnx", "ONNX export from JAX 0.7.2+", extra="export")
        logging.getLogger("onnx_ir").setLevel(logging.ERROR)  # "value type ... not known" for shape constants
        with jax.disable_jit():
            jax2onnx.to_onnx(_forward(model), inputs=[("batch", s, s, c)], input_names=[formats.INPUT],
                             output_names=[formats.OUTPUT], return_mode="file", output_path=str(path))
        return
    tf2onnx = require("tf2onnx", "ONNX export from JAX 0.7.1 (through jax2tf)")
    tf = require("tensorflow", "ONNX export from JAX 0.7.1 (through jax2tf)", extra="tf")
    from jax.experimental import jax2tf
    spec = [tf.TensorSpec((None, s, s, c), tf.float32, name=formats.INPUT)]
    converted = jax2tf.convert(_forward(model), polymorphic_shapes=[f"(b, {s}, {s}, {c})"],
                               native_serialization=False, enable_xla=False)
    function = tf.function(converted, autograph=False, input_signature=spec)
    tf2onnx.convert.from_function(function, input_signature=spec, opset=TF2ONNX_OPSET, output_path=str(path))


def load_exported(path: str | Path) -> tuple[export_flow.Forward, dict]:
    """``(forward, metadata)`` of a ``.jax_export`` folder written by :func:`export`: NHWC images to logits."""
    path = Path(path)
    if not (path / _BLOB).is_file() or not (path / formats.METADATA_FILE).is_file():
        raise formats.ModelFileError(f"{path} is not a jax.export folder written by vgg export "
                                     f"(needs {_BLOB} and {formats.METADATA_FILE})")
    meta = formats.loads((path / formats.METADATA_FILE).read_text(), path)
    try:
        exported = jax_export.deserialize(bytearray((path / _BLOB).read_bytes()))
    except Exception as exc:  # flatbuffer errors on a truncated or foreign blob
        raise formats.ModelFileError(f"{path / _BLOB} is not a readable jax.export blob ({type(exc).__name__}: "
                                     f"{str(exc)[:200]})") from None
    return lambda images: np.asarray(exported.call(jnp.asarray(images, jnp.float32))), meta


def export(model: VGG, path: str | Path, format: str = "native",
           images: np.ndarray | None = None) -> export_flow.Exported:
    """Write ``model`` for serving (``format`` native: a ``.jax_export`` folder; onnx: ``.onnx``), reload it
    and check it against the live model on ``images`` (NHWC; default a fixed random batch) before it
    appears at ``path``."""
    model = export_flow.float32_master(model, VGG, export_weights, import_weights)
    model.eval()  # dropout off in the traced graph; the model stays in eval mode, as after predict
    writers = {"native": functools.partial(_write_native, model), "onnx": functools.partial(_write_onnx, model)}
    return export_flow.run(model, path, format, NAME, LAYOUT, writers, lambda p: load_exported(p)[0],
                    lambda x: predict(model, x), images)
