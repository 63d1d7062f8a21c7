"""Model files by suffix: what ``vgg train`` writes, each backend's native serving format, ONNX, and the
canonical safetensors; plus the metadata every exported model carries (input, layout, size, classes)."""

from __future__ import annotations

import json
from pathlib import Path

from common.core import backends, tolerances
from common.data.fashion_mnist import CLASSES

FORMATS = ("native", "onnx")
#: backend -> suffix of the model file ``vgg train`` writes (``vgg.save``)
TRAINED = {name: b.trained_suffix for name, b in backends.BACKENDS.items()}
#: backend -> suffix of its native serving export: torch.export program, SavedModel folder, jax.export folder,
#: MXNet symbol + params folder
NATIVE = {name: b.native_suffix for name, b in backends.BACKENDS.items()}
ONNX = ".onnx"
WEIGHTS = ".safetensors"
#: the file holding the metadata inside a folder format (SavedModel: under assets.extra/, TF Serving's place)
METADATA_FILE = "vgg.json"
INPUT, OUTPUT = "images", "logits"
#: a reloaded export must match the live model this closely (relative): the parity suite's logits tolerance
TOLERANCE = tolerances.TOLERANCES["logits"]


class ModelFileError(ValueError):
    """A path that is not a model file this project reads, or a format this backend cannot write."""


def kind(path: str | Path) -> tuple[str, str | None]:
    """``(kind, backend)`` of a model path from its suffix: kind is trained, native, onnx or weights
    (backend None for onnx and weights, whose backend is in the file or given by the user)."""
    name = Path(path).name
    for backend, suffix in TRAINED.items():
        if name.endswith(suffix):
            return "trained", backend
    for backend, suffix in NATIVE.items():
        if name.endswith(suffix):
            return "native", backend
    if name.endswith(ONNX):
        return "onnx", None
    if name.endswith(WEIGHTS):
        return "weights", None
    known = sorted({*TRAINED.values(), *NATIVE.values(), ONNX, WEIGHTS})
    raise ModelFileError(f"{path}: unknown model suffix; expected one of {', '.join(known)}")


def export_suffix(backend: str, fmt: str) -> str:
    """The suffix an export of ``backend`` in ``fmt`` must have."""
    if fmt not in FORMATS:
        raise ModelFileError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return NATIVE[backend] if fmt == "native" else ONNX


def check_export_path(path: str | Path, backend: str, fmt: str) -> Path:
    """``path`` if its suffix fits ``fmt`` for ``backend``, else a ModelFileError naming the right one."""
    suffix = export_suffix(backend, fmt)
    path = Path(path)
    if not path.name.endswith(suffix) or path.name == suffix:
        raise ModelFileError(f"{path}: a {backend} {fmt} export must be named *{suffix}")
    return path


def metadata(model, backend: str, layout: str, fmt: str) -> dict:
    """What a server needs to feed an exported model: input name and layout, image size, class names."""
    n, c, s = "batch", model.in_channels, model.image_size
    shape = [n, c, s, s] if layout == "NCHW" else [n, s, s, c]
    return {"producer": "vgg-frameworks", "backend": backend, "format": fmt,
            "framework": backends.framework_version(backend), "input": INPUT, "output": OUTPUT,
            "layout": layout, "input_shape": shape, "pixels": "float32 in [0, 1], grayscale, resized bilinearly",
            "classes": class_names(model.num_classes), "config": model.config.to_dict()}


def class_names(count: int) -> list[str]:
    """Fashion-MNIST's names for its ten classes; the indices as text for any other count."""
    return list(CLASSES) if count == len(CLASSES) else [str(i) for i in range(count)]


def dumps(meta: dict) -> str:
    return json.dumps(meta, indent=1)


def loads(text: str | bytes, source: str | Path) -> dict:
    """Parse metadata, or say which file does not carry this project's."""
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("producer") != "vgg-frameworks":
        raise ModelFileError(f"{source}: no vgg-frameworks metadata (not exported by vgg export)")
    return meta
