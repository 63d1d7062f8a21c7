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
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export
from jax.extend.mlir import refine_polymorphic_shapes
from jax.interpreters import mlir

from common.core import atomic
from common.core.config import MAX_TENSOR_BYTES
from common.serving import export_flow, formats, signing
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


def _is(value: mlir.ir.Type, kind: type) -> bool:
    """Whether an MLIR type is of ``kind``: newer bindings hand back the concrete class and drop the static
    ``isinstance`` that older ones need."""
    return isinstance(value, kind) or (hasattr(kind, "isinstance") and kind.isinstance(value))


def _element_bytes(element: mlir.ir.Type) -> int:
    """Bytes of one element of a tensor type (a complex number's two parts; fewer bits than a byte as one)."""
    if _is(element, mlir.ir.ComplexType):
        return 2 * _element_bytes(mlir.ir.ComplexType(element).element_type)
    return max(getattr(element, "width", 64), 8) // 8  # index, the one type without a width, is 64 bits


def _tensor_bytes(value_type: mlir.ir.Type) -> int:
    """Bytes of a value of a ranked tensor type, a dynamic dimension counted as 1; 0 for other types."""
    if not _is(value_type, mlir.ir.RankedTensorType):
        return 0
    shaped = mlir.ir.ShapedType(value_type)
    dims = [1 if shaped.is_dynamic_dim(i) else size for i, size in enumerate(shaped.shape)]
    return math.prod(dims) * _element_bytes(shaped.element_type)


def _walk(operation, ops: set[str], targets: set[str], tensors: dict[str, int]) -> None:
    """Add the name of every operation nested in ``operation``, every custom call's target, and the bytes of
    every tensor type its blocks take or its operations make (every operand is one or the other)."""
    for region in operation.regions:
        for block in region.blocks:
            tensors.update((str(arg.type), _tensor_bytes(arg.type)) for arg in block.arguments)
            for inner in block.operations:
                inner = inner.operation
                ops.add(inner.name)
                tensors.update((str(result.type), _tensor_bytes(result.type)) for result in inner.results)
                if inner.name == "stablehlo.custom_call":
                    targets.add(mlir.ir.StringAttr(inner.attributes["call_target_name"]).value)
                _walk(inner, ops, targets, tensors)


def module_contents(module_text: str | bytes) -> tuple[set[str], set[str], dict[str, int]]:
    """``(operations, custom-call targets, tensor type -> bytes)`` of a StableHLO module (text or bytecode),
    parsed, not run."""
    with mlir.make_ir_context():
        module = mlir.ir.Module.parse(module_text)
        ops: set[str] = {module.operation.name}
        targets: set[str] = set()
        tensors: dict[str, int] = {}
        _walk(module.operation, ops, targets, tensors)
    return ops, targets, tensors


def _refined(exported: jax_export.Exported) -> bytes:
    """The module of ``exported`` as called on a batch of one, every dynamic shape resolved by StableHLO's
    shape refinement (lowered, neither compiled nor run): a ``?`` may stand for ``batch * 100000``."""
    args = [jax.ShapeDtypeStruct(tuple(d if isinstance(d, int) else 1 for d in aval.shape), aval.dtype)
            for aval in exported.in_avals]
    module = jax.jit(exported.call).lower(*args).compiler_ir("stablehlo")
    assert module is not None  # None only for a dialect JAX does not know
    return refine_polymorphic_shapes(mlir.module_to_bytecode(module))


def _too_big(tensors: dict[str, int]) -> list[str]:
    """A finding for each tensor type beyond :data:`MAX_TENSOR_BYTES`, with its size in GB."""
    return [f"{name} of {min(size, 10 ** 300) / 1e9:.3g} GB" for name, size in sorted(tensors.items())
            if size > MAX_TENSOR_BYTES]


def _deserialize(path: Path) -> jax_export.Exported:
    """The blob of the export folder at ``path``, deserialized (a flatbuffer: nothing in it runs)."""
    return jax_export.deserialize(bytearray((path / _BLOB).read_bytes()))


def findings(path: Path, exported: jax_export.Exported | None = None) -> list[str]:
    """The operations and custom calls of the export folder at ``path`` (``exported``, when already read)
    that no export of a VGG has, and its tensors beyond :data:`MAX_TENSOR_BYTES` for one image: as its
    module types them and, where nothing else is found, once its shapes are refined for a batch of one."""
    exported = exported or _deserialize(path)
    ops, targets, tensors = module_contents(exported.mlir_module())
    found = [*formats.foreign(ops, STABLEHLO_OPS, "operation"), *formats.foreign(targets, CUSTOM_CALLS, "custom call"),
             *_too_big(tensors)]
    return found or _too_big(module_contents(_refined(exported))[2])


def load_exported(path: str | Path, trust_model: bool = False) -> tuple[export_flow.Forward, dict]:
    """``(forward, metadata)`` of a ``.jax_export`` folder written by :func:`export`: NHWC images to logits.

    The blob is data (a flatbuffer holding StableHLO, no pickle), but the module can call native code
    through custom calls; unless ``trust_model``, one with an operation outside :data:`STABLEHLO_OPS` or a
    custom call outside :data:`CUSTOM_CALLS`, or a tensor beyond :data:`MAX_TENSOR_BYTES` for one image, is
    refused before it is compiled."""
    path = Path(path)
    if not trust_model:
        signing.require_signed(path)
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
