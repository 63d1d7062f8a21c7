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
from jax.interpreters import mlir

from common.core import atomic
from common.serving import export_flow, formats
from common.serving.optional import require
from vgg_jax.model import LAYOUT, NAME, VGG, predict
from vgg_jax.weights import export_weights, import_weights

_BLOB = "exported.bin"
#: tf2onnx 1.17's newest opset (the jax2tf route); jax2onnx writes its own default
TF2ONNX_OPSET = 18
#: the operations in the StableHLO module of an export of a VGG with every layer kind (LRN, 1x1
#: convolutions, batch norm); tests/test_untrusted_models.py checks real exports stay inside them
STABLEHLO_OPS = frozenset({
    "builtin.module", "func.call", "func.func", "func.return", "stablehlo.add", "stablehlo.broadcast_in_dim",
    "stablehlo.case", "stablehlo.compare", "stablehlo.concatenate", "stablehlo.constant", "stablehlo.convert",
    "stablehlo.convolution", "stablehlo.custom_call", "stablehlo.divide", "stablehlo.dot_general",
    "stablehlo.dynamic_broadcast_in_dim", "stablehlo.dynamic_gather", "stablehlo.dynamic_reshape",
    "stablehlo.get_dimension_size", "stablehlo.maximum", "stablehlo.multiply", "stablehlo.pad", "stablehlo.power",
    "stablehlo.reduce", "stablehlo.reshape", "stablehlo.return", "stablehlo.rsqrt", "stablehlo.subtract"})
#: the one custom call those make, jax.export's check of the batch size: any other target is native code of
#: this process handed bytes from the file (a host callback's is a pointer)
CUSTOM_CALLS = frozenset({"shape_assertion"})


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


def _walk(operation, ops: set[str], targets: set[str]) -> None:
    """Add the name of every operation nested in ``operation``, and every custom call's target."""
    for region in operation.regions:
        for block in region.blocks:
            for inner in block.operations:
                inner = inner.operation
                ops.add(inner.name)
                if inner.name == "stablehlo.custom_call":
                    targets.add(mlir.ir.StringAttr(inner.attributes["call_target_name"]).value)
                _walk(inner, ops, targets)


def module_ops(exported: jax_export.Exported) -> tuple[set[str], set[str]]:
    """``(operations, custom-call targets)`` of a deserialized export's StableHLO module, parsed, not run."""
    with mlir.make_ir_context():
        module = mlir.ir.Module.parse(exported.mlir_module())
        ops, targets = {module.operation.name}, set()
        _walk(module.operation, ops, targets)
    return ops, targets


def _deserialize(path: Path) -> jax_export.Exported:
    """The blob of the export folder at ``path``, deserialized (a flatbuffer: nothing in it runs)."""
    return jax_export.deserialize(bytearray((path / _BLOB).read_bytes()))


def findings(path: Path, exported: jax_export.Exported | None = None) -> list[str]:
    """The operations and custom calls of the export folder at ``path`` (``exported``, when already read)
    that no export of a VGG has."""
    ops, targets = module_ops(exported or _deserialize(path))
    return formats.foreign(ops, STABLEHLO_OPS, "operation") + formats.foreign(targets, CUSTOM_CALLS, "custom call")


def load_exported(path: str | Path, trust_model: bool = False) -> tuple[export_flow.Forward, dict]:
    """``(forward, metadata)`` of a ``.jax_export`` folder written by :func:`export`: NHWC images to logits.

    The blob is data (a flatbuffer holding StableHLO, no pickle), but the module can call native code
    through custom calls; unless ``trust_model``, one with an operation outside :data:`STABLEHLO_OPS` or a
    custom call outside :data:`CUSTOM_CALLS` is refused before it is compiled."""
    path = Path(path)
    if not (path / _BLOB).is_file() or not (path / formats.METADATA_FILE).is_file():
        raise formats.ModelFileError(f"{path} is not a jax.export folder written by vgg export "
                                     f"(needs {_BLOB} and {formats.METADATA_FILE})")
    meta = formats.loads((path / formats.METADATA_FILE).read_text(), path)
    try:
        exported = _deserialize(path)
        if not trust_model and (found := findings(path, exported)):
            raise formats.untrusted(path, found)
    except formats.ModelFileError:
        raise
    except Exception as exc:  # flatbuffer or MLIR errors on a truncated or foreign blob
        raise formats.ModelFileError(f"{path / _BLOB} is not a readable jax.export blob "
                                     f"({formats.first_line(exc)})") from None
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
