"""ONNX files of every backend made alike (input ``images``, output ``logits``, a named batch axis, our
metadata, one self-contained file) and run in ONNX Runtime, the one runtime that loads all four."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from common.core.config import MAX_CLASSES, MAX_IMAGE_SIZE
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


def read_metadata(path: str | Path) -> dict | None:
    """Our metadata of an ONNX file (None if another tool wrote it), without loading its weights."""
    onnx = _onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise formats.ModelFileError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    props = {p.key: p.value for p in model.metadata_props}
    return formats.loads(props[METADATA_KEY], path) if METADATA_KEY in props else None


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
