"""ONNX files of every backend made alike (input ``images``, output ``logits``, a named batch axis, our
metadata, one self-contained file) and run in ONNX Runtime, the one runtime that loads all four."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from common.serving import formats
from common.serving.optional import require

METADATA_KEY = "vgg"
BATCH = "batch"


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


def read_metadata(path: str | Path) -> dict:
    """Our metadata of an ONNX file, without loading its weights."""
    onnx = _onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise formats.ModelFileError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    props = {p.key: p.value for p in model.metadata_props}
    return formats.loads(props.get(METADATA_KEY, ""), path)


def session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` (``threads`` intra-op threads; default ORT's own)."""
    ort = require("onnxruntime", "running ONNX files")
    options = ort.SessionOptions()
    threads = threads or int(os.environ.get("VGG_THREADS", "0"))
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ORT's warnings are about graph optimisations, not results
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail / InvalidGraph / InvalidProtobuf types
        raise formats.ModelFileError(f"{path}: ONNX Runtime cannot load it ({str(exc).strip()[:300]})") from None


def runner(path: str | Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function from images (in the file's layout) to logits, running ``path`` in ONNX Runtime."""
    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    return lambda images: sess.run(None, {name: np.ascontiguousarray(images, np.float32)})[0]
