"""ONNX files of every backend made alike (input ``images``, output ``logits``, a named batch axis, our
metadata, one self-contained file) and run in ONNX Runtime, the one runtime that loads all four."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeGuard

import numpy as np

from common.core.config import MAX_CLASSES, MAX_IMAGE_SIZE, MAX_TENSOR_BYTES
from common.serving import formats
from common.serving.optional import require

METADATA_KEY = "vgg"
BATCH = "batch"
#: ops whose output holds no more elements than their (first) input: the only ones whose output may keep a
#: shape that inference cannot pin down (JAX's exports slice by computed bounds); any other op's unknown shape
#: is read from data at run time (ConstantOfShape, Expand, Tile, Pad, Reshape, Resize, Range, a broadcast...)
BOUNDED = frozenset({"Identity", "Slice", "Squeeze", "Unsqueeze", "Transpose", "Flatten"})
#: an initializer with more elements than this has its data dropped before shape inference, which reads the
#: values of small shape-like tensors only: a copy of the weights would double the check's memory
SHAPE_DATA = 4096
#: the fields of a TensorProto that hold its values
DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


def _onnx():
    return require("onnx", "ONNX export")


def finish(path: Path, meta: dict) -> None:
    """Rewrite the exporter's file at ``path`` in the common shape, as one file (external data folded in).

    Exporters name things their own way (torch ``images``, tf2onnx ``Identity:0``, MXNet ``data`` and
    ``dense2_fwd``) and some leave the batch axis unnamed; servers and ``vgg parity --onnx`` address every
    file alike after this.
    """
    onnx = _onnx()
    model = onnx.load(str(path))
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [onnx.ValueInfoProto.FromString(i.SerializeToString()) for i in graph.input if i.name not in weights]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(f"{path}: expected one input and one output, found {len(inputs)} and {len(graph.output)}")
    del graph.input[:]
    graph.input.extend(inputs)  # initializers listed as inputs make ONNX Runtime warn, and are not inputs
    renames = {inputs[0].name: formats.INPUT, graph.output[0].name: formats.OUTPUT}
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, formats.dumps(meta)
    onnx.checker.check_model(model)
    for sidecar in path.parent.glob(f"{path.name}*.data"):
        sidecar.unlink()
    onnx.save(model, str(path))


def _load(path: str | Path):
    """The ModelProto of ``path`` without any external data, or a one-line ModelFileError."""
    try:
        return _onnx().load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise formats.ModelFileError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None


def read_metadata(path: str | Path) -> dict | None:
    """Our metadata of an ONNX file (None if another tool wrote it), without loading its weights."""
    props = {p.key: p.value for p in _load(path).metadata_props}
    return formats.loads(props[METADATA_KEY], path) if METADATA_KEY in props else None


def check_graph(path: str | Path) -> None:
    """Refuse, before ONNX Runtime sees it, an ONNX file that could make it allocate without bound: data in
    other files, subgraphs, or a tensor above MAX_TENSOR_BYTES for one image (its static shape, by shape
    inference with the batch axis 1) or of a size only data decides. ORT folds constants when it creates a
    session, so a ConstantOfShape of 256 GiB would be allocated before any input is given."""
    model = _load(path)
    graph = model.graph
    _refuse_external_data(path, graph)
    _refuse_subgraphs(path, graph)
    for tensor in graph.initializer:
        _refuse_large(path, tensor.name, tensor.data_type, list(tensor.dims))
    for sparse in graph.sparse_initializer:  # ORT makes these dense when it loads them
        _refuse_large(path, sparse.values.name, sparse.values.data_type, list(sparse.dims))
    shapes = _inferred_shapes(path, model)
    for name, shape in shapes.items():
        if _is_static(shape):
            _refuse_large(path, name, *shape)
    _refuse_unbounded(path, graph, shapes)


def _refuse_subgraphs(path: str | Path, graph) -> None:
    """Refuse an op that runs a subgraph (If, Loop, Scan): how often and on what is decided by data."""
    for node in graph.node:
        if any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute):
            raise formats.ModelFileError(f"{path}: not loaded: op {formats.printable(node.op_type, 80)} runs a "
                                         "subgraph, whose memory this check cannot bound; vgg export never writes one")


def _refuse_unbounded(path: str | Path, graph, shapes: dict[str, tuple[int, list | None]]) -> None:
    """Refuse an op outside BOUNDED whose output's shape inference could not pin down: its size is read from
    data at run time (``shapes``: :func:`_inferred_shapes`)."""
    for node in graph.node:
        unknown = [o for o in node.output if o and not _is_static(shapes.get(o))]
        if unknown and node.op_type not in BOUNDED:
            raise formats.ModelFileError(
                f"{path}: not loaded: op {formats.printable(node.op_type, 80)} makes tensor "
                f"{formats.printable(unknown[0], 80)!r} of a size read from data at run time, which this check "
                "cannot bound (MAX_TENSOR_BYTES); vgg export never writes one")


def _refuse_external_data(path: str | Path, graph) -> None:
    """Refuse a tensor whose data is in another file: its location could name any file on this machine."""
    helper = _onnx().external_data_helper
    for tensor in _tensors(graph):
        if helper.uses_external_data(tensor):
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            raise formats.ModelFileError(
                f"{path}: not loaded: tensor {formats.printable(tensor.name, 80)!r} keeps its data in another file "
                f"({formats.shown(location[:200])}), which vgg export never writes (export folds it in)")


def _tensors(graph) -> Iterator:
    """Every TensorProto of ``graph``: initializers, sparse ones' parts, and node attributes' values."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            yield from (attribute.t, *attribute.tensors)
            yield from (t for s in (attribute.sparse_tensor, *attribute.sparse_tensors) for t in (s.values, s.indices))


def _inferred_shapes(path: str | Path, model) -> dict[str, tuple[int, list | None]]:
    """name -> (element type, dims: an int or None each, None if the rank is unknown) of every value of
    ``model``'s graph, by ONNX shape inference with data propagation, the batch axis bound to 1. Shapes the
    file states itself are dropped first (a forged one would hide a large tensor), and so are big weights'
    values (``model`` is changed)."""
    onnx = _onnx()
    graph = model.graph
    del graph.value_info[:]
    for value in graph.output:
        value.type.tensor_type.ClearField("shape")
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    for tensor in graph.initializer:
        if math.prod(tensor.dims) > SHAPE_DATA:
            for field in DATA_FIELDS:
                tensor.ClearField(field)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True).graph
    except Exception as exc:  # a graph so malformed that inference gives up: nothing can be said of its memory
        raise formats.ModelFileError(f"{path}: not loaded: its shapes cannot be inferred ({formats.first_line(exc)})"
                                     ) from None
    return {v.name: _shape(v) for v in (*inferred.input, *inferred.value_info, *inferred.output)}


def _shape(value) -> tuple[int, list | None]:
    """(element type, dims) of a ValueInfoProto: each dim an int, or None where unknown; dims None for an
    unknown rank or a value that is not a tensor."""
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return tensor.elem_type, None
    return tensor.elem_type, [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _is_static(shape: tuple[int, list | None] | None) -> TypeGuard[tuple[int, list[int]]]:
    return shape is not None and shape[1] is not None and all(isinstance(d, int) and d >= 0 for d in shape[1])


def _refuse_large(path: str | Path, name: str, elem_type: int, dims: list[int]) -> None:
    """Refuse a tensor of static ``dims`` whose values take more than MAX_TENSOR_BYTES."""
    size = math.prod(max(d, 0) for d in dims) * _element_bytes(elem_type)
    if size > MAX_TENSOR_BYTES:
        raise formats.ModelFileError(
            f"{path}: not loaded: tensor {formats.printable(name, 80)!r} of shape {tuple(dims)} would take "
            f"{_gib(size)}, above the {_gib(MAX_TENSOR_BYTES)} one tensor may hold (MAX_TENSOR_BYTES)")


def _element_bytes(elem_type: int) -> int:
    """Bytes of one element of ONNX type ``elem_type`` (1 for a type NumPy has no size for)."""
    try:
        return max(1, _onnx().helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except (KeyError, TypeError, ValueError):
        return 1


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


def infer_metadata(sess, path: str | Path) -> dict:
    """Metadata for an ONNX file from elsewhere, read off its one input and output: an image batch
    (N, C, H, W) or (N, H, W, C) with C 1 or 3 and H = W, and (N, classes) logits."""
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    classes = outputs[0].shape[-1] if len(outputs) == 1 and len(outputs[0].shape) == 2 else None
    if len(shape) == 4 and shape[1] in (1, 3) and shape[2] == shape[3] and isinstance(shape[2], int):
        layout, channels, size = "NCHW", shape[1], shape[2]
    elif len(shape) == 4 and shape[3] in (1, 3) and shape[1] == shape[2] and isinstance(shape[1], int):
        layout, channels, size = "NHWC", shape[3], shape[1]
    else:
        raise formats.ModelFileError(
            f"{path}: its input {[i.name for i in inputs]} of shape {shape or [list(i.shape) for i in inputs]} is not "
            "one batch of square images (N, C, S, S) or (N, S, S, C) with C 1 or 3")
    if not isinstance(classes, int):
        raise formats.ModelFileError(f"{path}: its output is not one (batch, classes) array of logits")
    if size > MAX_IMAGE_SIZE or classes > MAX_CLASSES:
        raise formats.ModelFileError(f"{path}: its {size}x{size} input or {classes} classes are beyond this "
                                     f"project's bounds ({MAX_IMAGE_SIZE} pixels, {MAX_CLASSES} classes)")
    return {"producer": "unknown", "input": inputs[0].name, "output": outputs[0].name, "layout": layout,
            "input_shape": ["batch", *shape[1:]], "classes": formats.class_names(classes),
            "config": {"image_size": size, "in_channels": channels, "num_classes": classes}}


#: ONNX Runtime's execution provider for each ``--device``
PROVIDERS = {"cpu": "CPUExecutionProvider", "gpu": "CUDAExecutionProvider"}


def session(path: str | Path, threads: int | None = None, device: str = "cpu"):
    """An ONNX Runtime session for ``path`` on ``device`` (``threads`` intra-op threads; default ORT's own);
    a GPU without ORT's CUDA provider is refused in one line."""
    ort = require("onnxruntime", "running ONNX files")
    provider = PROVIDERS.get(device)
    if provider is None or provider not in ort.get_available_providers():
        raise formats.ModelFileError(f"--device {device}: this ONNX Runtime has no {provider or device} (it has "
                                     f"{', '.join(ort.get_available_providers())}); for a GPU install "
                                     "onnxruntime-gpu")
    options = ort.SessionOptions()
    threads = threads or int(os.environ.get("VGG_THREADS", "0"))
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ORT's warnings are about graph optimisations, not results
    check_graph(path)
    try:
        return ort.InferenceSession(str(path), options, providers=[provider])
    except Exception as exc:  # ORT raises its own Fail / InvalidGraph / InvalidProtobuf types
        raise formats.ModelFileError(f"{path}: ONNX Runtime cannot load it ({str(exc).strip()[:300]})") from None


def runner(model, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function from images (in the file's layout) to logits, running ``model`` (a path or a session)
    in ONNX Runtime."""
    sess = session(model, threads) if isinstance(model, (str, Path)) else model
    name = sess.get_inputs()[0].name
    return lambda images: sess.run(None, {name: np.ascontiguousarray(images, np.float32)})[0]
