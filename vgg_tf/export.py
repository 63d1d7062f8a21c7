"""TensorFlow serving exports through Keras's ``model.export``: a SavedModel (TF Serving's format; its
``serve`` endpoint) and ONNX (tf2onnx underneath), both with a dynamic batch axis and NHWC input."""

from __future__ import annotations

import collections
import functools
from pathlib import Path

import numpy as np

from common.core import atomic
from common.serving import export_flow, formats, signing
from common.serving.optional import require
from vgg_tf.framework import tf
from vgg_tf.model import LAYOUT, NAME, VGG, predict
from vgg_tf.weights import export_weights, import_weights

# isort: split
from tensorflow.core.protobuf import saved_model_pb2  # after vgg_tf.framework, which sets TensorFlow's environment

#: tf2onnx 1.17's newest opset
ONNX_OPSET = 18
#: the ops a SavedModel that :func:`export` writes runs, for a VGG with every layer kind (LRN, 1x1
#: convolutions, batch norm): its graph and every function but the checkpoint's; a SavedModel is a program,
#: and these are the ones of a VGG (tests/test_untrusted_models.py checks real exports stay inside them)
SAVED_MODEL_OPS = frozenset({
    "AddV2", "AssignVariableOp", "BiasAdd", "Const", "Conv2D", "Identity", "LRN", "MatMul", "MaxPool", "Mul",
    "NoOp", "Pack", "Placeholder", "ReadVariableOp", "Relu", "Reshape", "Rsqrt", "Shape", "Squeeze",
    "StatefulPartitionedCall", "StridedSlice", "Sub", "VarHandleOp", "VarIsInitializedOp"})
#: the ops its checkpoint functions add: TF1-style loaders and TF Serving run them (through the graph's own nodes)
#: to restore or save the variables; ``tf.saved_model.load`` never does, nor may anything it or a signature calls
CHECKPOINT_OPS = frozenset({"DisableCopyOnRead", "MergeV2Checkpoints", "RestoreV2", "SaveV2", "Select",
                            "ShardedFilename", "StaticRegexFullMatch", "StringJoin"})
#: the objects of an export's object graph, by kind and by the identifier of a user object: what
#: ``tf.saved_model.load`` rebuilds; a resource (whose initializer it runs), a constant, an asset or a class
#: registered by name is none of ours
OBJECT_KINDS = frozenset({"bare_concrete_function", "function", "user_object", "variable"})
USER_OBJECTS = frozenset({"_generic_user_object", "signature_map", "trackable_list_wrapper"})


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


def _named_functions(value) -> set[str]:
    """The functions an attribute value names: its function or list of functions, and those their own
    instantiation attributes name, at any depth."""
    named = set()
    for func in [value.func, *value.list.func]:
        named.add(func.name)
        for inner in func.attr.values():
            named |= _named_functions(inner)
    return named


def _called(nodes, library: dict) -> set[str]:
    """The library functions ``nodes`` call: by op name, or through a function-valued attribute (the ``f``
    of a (Stateful)PartitionedCall, the branches and bodies of If, Case and While, nested ones)."""
    called = {node.op for node in nodes}
    for node in nodes:
        for value in node.attr.values():
            called |= _named_functions(value)
    return called & set(library)


def _reachable(roots: set[str], library: dict) -> set[str]:
    """``roots`` and every library function they call, transitively."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _called(library[name].node_def, library)
    return seen


def _loaded_functions(graph) -> set[str]:
    """The library functions ``tf.saved_model.load`` or a signature can run, read from the meta graph's
    object graph: the concrete functions of every object (functions and signatures, a resource's
    initializer, a saveable's save and restore functions), every one it lists, and what they call."""
    library = _library(graph)
    objects = graph.object_graph_def
    roots = set(objects.concrete_functions)
    for node in objects.nodes:
        roots |= {*node.function.concrete_functions, node.bare_concrete_function.concrete_function_name,
                  node.captured_tensor.concrete_function}
    return _reachable(roots & set(library), library)


def _library(graph) -> dict:
    """Name -> FunctionDef of a meta graph's function library."""
    return {f.signature.name: f for f in graph.graph_def.library.function}


def _read(path: str | Path):
    """The one meta graph of the SavedModel at ``path`` (``saved_model.pb``, what TensorFlow reads first),
    parsed without loading it; a ModelFileError for a file ``tf.saved_model.load`` would load as TF1's,
    running the ops its saver and init op name."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    if len(saved.meta_graphs) != 1 or not saved.meta_graphs[0].HasField("object_graph_def"):
        raise formats.untrusted(path, ["a TF1-style meta graph, without an object graph"])
    return saved.meta_graphs[0]


def _ops(graph) -> tuple[set[str], set[str]]:
    """``(program ops, checkpoint ops)`` of a meta graph: the program is its own nodes and every function
    :func:`_loaded_functions` finds (never decided by the file's ``saver_def``); the checkpoint, the other
    library functions, which only its own nodes (TF1 loaders, TF Serving) call. A function called by op
    name counts as an op too: no export of a VGG calls one so."""
    library, loaded = _library(graph), _loaded_functions(graph)
    program: set[str] = {n.op for n in graph.graph_def.node}
    checkpoint: set[str] = set()
    for name, function in library.items():
        (program if name in loaded else checkpoint).update(n.op for n in function.node_def)
    return program, checkpoint


def saved_model_ops(path: str | Path) -> tuple[set[str], set[str]]:
    """``(program ops, checkpoint ops)`` of the SavedModel at ``path`` (see :func:`_ops`)."""
    return _ops(_read(path))


def _objects(objects) -> list[str]:
    """The objects of the object graph ``objects`` that no export of a VGG has."""
    kinds = {node.WhichOneof("kind") for node in objects.nodes}
    users = {node.user_object.identifier for node in objects.nodes if node.HasField("user_object")}
    registered = {node.registered_name or node.registered_saver for node in objects.nodes} - {""}
    return (formats.foreign(kinds, OBJECT_KINDS, "object") + formats.foreign(users, USER_OBJECTS, "object")
            + formats.foreign(registered, frozenset(), "registered class"))


def _findings(graph) -> list[str]:
    """What a meta graph holds that no export of a VGG has: objects, a function defined twice, ops."""
    names = collections.Counter(f.signature.name for f in graph.graph_def.library.function)
    program, checkpoint = _ops(graph)
    return (_objects(graph.object_graph_def) + [f"function {name} twice" for name, n in names.items() if n > 1]
            + formats.foreign(program, SAVED_MODEL_OPS) + formats.foreign(checkpoint, SAVED_MODEL_OPS | CHECKPOINT_OPS))


def findings(path: Path) -> list[str]:
    """The objects and ops of the SavedModel at ``path`` that no export of a VGG has."""
    return _findings(_read(path))


def _tensor_bytes(shape, dtype: int = tf.float32.as_datatype_enum) -> int:
    """Bytes of a tensor of the TensorShapeProto ``shape`` and DataType ``dtype``, an unknown size (the batch)
    counted as 1; 0 for an unknown rank."""
    if shape.unknown_rank:
        return 0
    return int(np.prod([max(d.size, 1) for d in shape.dim], dtype=object)) * max(tf.as_dtype(dtype).size, 1)


def _constant_sizes(nodes) -> list[tuple[int, str]]:
    """``(bytes, node name)`` of every constant among ``nodes``: its value, which a file may state as one value
    and a shape for TensorFlow to fill out."""
    return [(_tensor_bytes(n.attr["value"].tensor.tensor_shape, n.attr["value"].tensor.dtype), n.name)
            for n in nodes if n.op == "Const"]


def _output_sizes(nodes) -> list[tuple[int, str]]:
    """``(bytes, node name)`` of every output shape ``nodes`` declare (for one image), but a variable's read's
    (a weight, which the checkpoint holds)."""
    return [(_tensor_bytes(shape), n.name) for n in nodes if n.op != "ReadVariableOp" and "_output_shapes" in n.attr
            for shape in n.attr["_output_shapes"].list.shape]


def _largest_tensor(graph) -> tuple[int, str]:
    """``(bytes, node name)`` of the largest tensor for one image a meta graph states: the constants of its own
    nodes and every function (loading builds them all), the output shapes of its own nodes and the functions
    loading or serving runs (the checkpoint's pass whole weights around). A file may leave shapes unstated:
    this bounds what it states."""
    library = _library(graph)
    program = [*graph.graph_def.node, *(n for name in sorted(_loaded_functions(graph)) for n in library[name].node_def)]
    everything = [*graph.graph_def.node, *(n for f in library.values() for n in f.node_def)]
    return max([(0, ""), *_constant_sizes(everything), *_output_sizes(program)], key=lambda entry: entry[0])


def check(path: Path) -> None:
    """Refuse (ModelFileError, before TensorFlow reads it) a SavedModel that holds objects or ops no export of
    a VGG has, or states a tensor beyond MAX_TENSOR_BYTES for one image."""
    graph = _read(path)
    if found := _findings(graph):
        raise formats.untrusted(path, found)
    size, node = _largest_tensor(graph)
    formats.check_tensor_size(path, node, size)


def load_exported(path: str | Path, trust_model: bool = False) -> tuple[export_flow.Forward, dict]:
    """``(forward, metadata)`` of a SavedModel written by :func:`export`: forward maps NHWC images to logits.

    A SavedModel is a program (graphs of TensorFlow ops, some of which read and write files); unless
    ``trust_model``, one using an op outside :data:`SAVED_MODEL_OPS` (:data:`CHECKPOINT_OPS` too in functions
    that nothing loading or serving it calls), or stating a tensor beyond MAX_TENSOR_BYTES, is refused
    (:func:`check`) before TensorFlow loads it."""
    path = Path(path)
    if not trust_model:
        signing.require_signed(path)
    meta_file = path / "assets.extra" / formats.METADATA_FILE
    if not meta_file.is_file():
        raise formats.ModelFileError(f"{path} is not a SavedModel written by vgg export (no {meta_file.name})")
    meta = formats.loads(meta_file.read_text(), path)
    try:
        if not trust_model:
            check(path)
        saved = tf.saved_model.load(str(path))
    except formats.ModelFileError:
        raise
    except Exception as exc:  # a truncated or foreign folder: protobuf's DecodeError, TensorFlow's errors
        raise formats.ModelFileError(f"{path} is not a readable SavedModel ({formats.first_line(exc)})") from None
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
