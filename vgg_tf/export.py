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
from tensorflow.core.protobuf import saved_model_pb2
from vgg_tf.model import LAYOUT, NAME, VGG, predict
from vgg_tf.weights import export_weights, import_weights

#: tf2onnx 1.17's newest opset
ONNX_OPSET = 18
#: the ops a SavedModel that :func:`export` writes runs, for a VGG with every layer kind (LRN, 1x1
#: convolutions, batch norm): its graph and every function but the checkpoint's; a SavedModel is a program,
#: and these are the ones of a VGG (tests/test_untrusted_models.py checks real exports stay inside them)
SAVED_MODEL_OPS = frozenset({
    "AddV2", "AssignVariableOp", "BiasAdd", "Const", "Conv2D", "Identity", "LRN", "MatMul", "MaxPool", "Mul",
    "NoOp", "Pack", "Placeholder", "ReadVariableOp", "Relu", "Reshape", "Rsqrt", "Shape", "Squeeze",
    "StatefulPartitionedCall", "StridedSlice", "Sub", "VarHandleOp", "VarIsInitializedOp"})
#: the ops its checkpoint functions add, the ones the graph's saver (``saver_def``) calls: TF1-style
#: loaders and TF Serving run them to restore (or save) the variables; ``tf.saved_model.load`` never does
CHECKPOINT_OPS = frozenset({"DisableCopyOnRead", "MergeV2Checkpoints", "RestoreV2", "SaveV2", "Select",
                            "ShardedFilename", "StaticRegexFullMatch", "StringJoin"})


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


def _called(nodes, library: dict) -> set[str]:
    """The library functions ``nodes`` call: by op name, or through a function-valued attribute (the ``f``
    of a (Stateful)PartitionedCall, the branches and bodies of If, Case and While)."""
    called = {node.op for node in nodes if node.op in library}
    for node in nodes:
        for value in node.attr.values():
            called |= {value.func.name} | {f.name for f in value.list.func}
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


def saved_model_ops(path: str | Path) -> tuple[set[str], set[str]]:
    """``(program ops, checkpoint ops)`` of the SavedModel at ``path``, read from ``saved_model.pb`` without
    loading it: the ops of every graph node and library function, but for the functions only the graph's
    saver (``saver_def``) calls, whose ops are the second set."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    program, checkpoint = set(), set()
    for graph in saved.meta_graphs:
        library = {f.signature.name: f for f in graph.graph_def.library.function}
        saver = graph.saver_def
        saver_nodes = {saver.restore_op_name, saver.save_tensor_name.split(":")[0]}
        nodes = graph.graph_def.node
        saving = _reachable(_called([n for n in nodes if n.name in saver_nodes], library), library)
        roots = _called([n for n in nodes if n.name not in saver_nodes], library) | (set(library) - saving)
        served = _reachable(roots, library)  # a function the saver shares with the program is the program's
        program |= {n.op for n in nodes if n.op not in library}
        for name, function in library.items():
            (program if name in served else checkpoint).update(n.op for n in function.node_def if n.op not in library)
    return program, checkpoint


def findings(path: Path) -> list[str]:
    """The ops of the SavedModel at ``path`` that no export of a VGG has."""
    program, checkpoint = saved_model_ops(path)
    return formats.foreign(program, SAVED_MODEL_OPS) + formats.foreign(checkpoint, SAVED_MODEL_OPS | CHECKPOINT_OPS)


def load_exported(path: str | Path, trust_model: bool = False) -> tuple[export_flow.Forward, dict]:
    """``(forward, metadata)`` of a SavedModel written by :func:`export`: forward maps NHWC images to logits.

    A SavedModel is a program (graphs of TensorFlow ops, some of which read and write files); unless
    ``trust_model``, one using an op outside :data:`SAVED_MODEL_OPS` (and :data:`CHECKPOINT_OPS`, in the
    checkpoint's functions) is refused before TensorFlow loads it."""
    path = Path(path)
    meta_file = path / "assets.extra" / formats.METADATA_FILE
    if not meta_file.is_file():
        raise formats.ModelFileError(f"{path} is not a SavedModel written by vgg export (no {meta_file.name})")
    meta = formats.loads(meta_file.read_text(), path)
    try:
        if not trust_model and (found := findings(path)):
            raise formats.untrusted(path, found)
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
