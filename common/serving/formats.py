"""Model files by suffix: what ``vgg train`` writes, each backend's native serving format, ONNX, and the
canonical safetensors; plus the metadata every exported model carries (input, layout, size, classes)."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from common.core import backends, tolerances
from common.core.config import MAX_TENSOR_BYTES, ConfigError, ModelConfig
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
LAYOUTS = ("NCHW", "NHWC")
#: what a refusal of a file's code says about getting past it
TRUST_HINT = "--trust-model (trust_model=True) loads it anyway if you trust its source"


class ModelFileError(ValueError):
    """A path that is not a model file this project reads, or a format this backend cannot write."""


def untrusted(path: str | Path, found: Iterable[str]) -> ModelFileError:
    """The refusal of a model file that holds what could run code of its own or ask for more memory than a
    VGG: names the file, what it ``found`` (e.g. "op WriteFile", "tensor pad of 34.4 GB") and :data:`TRUST_HINT`."""
    found = sorted({printable(f, 80) for f in found})
    listed = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
    return ModelFileError(f"{path}: not loaded: it holds {listed}, which vgg export never writes (code of the "
                          f"file's own, or sizes beyond a VGG's); {TRUST_HINT}")


def check_tensor_size(path: str | Path, node: str, size: int) -> None:
    """Refuse a graph whose node ``node`` holds ``size`` bytes for one image, beyond MAX_TENSOR_BYTES."""
    if size > MAX_TENSOR_BYTES:
        raise ModelFileError(f"{path}: not loaded: its node {printable(node, 80)} holds {size:,} bytes for one image, "
                             f"beyond this project's bound of {MAX_TENSOR_BYTES:,}; {TRUST_HINT}")


def printable(text: object, limit: int | None = None) -> str:
    """``text`` without control and format characters (a file's names reach a terminal: no escapes, no line
    breaks, no bidi overrides), cut to ``limit`` characters."""
    shown = "".join(ch for ch in str(text) if not unicodedata.category(ch).startswith("C"))
    return shown if limit is None or len(shown) <= limit else shown[:limit] + "..."


def shown(path: str | Path) -> str:
    """A file's name as printed in results and errors: unchanged if printable, else escaped as ``repr`` does
    (quoted), so a line break in a name cannot forge a result line nor an escape code reach the terminal."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def foreign(used: Iterable[str], allowed: frozenset[str], kind: str = "op") -> list[str]:
    """``"op X"`` for every name in ``used`` outside ``allowed``, sorted."""
    return [f"{kind} {name}" for name in sorted(set(used) - allowed)]


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` of ``exc`` in one line: the first line of its message that is not part of a
    traceback (MXNet puts its C++ one before the reason, TensorFlow a heading and the graph's Python one),
    without a repeated type prefix."""
    if isinstance(exc, MemoryError):  # raised with no message: say what it means
        return "MemoryError: it needs more memory than this process may take"
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    if lines and lines[0] == "Graph execution error:":  # TensorFlow: the reason follows the op's traceback
        files = [i for i, line in enumerate(lines) if line.startswith("File ")]
        lines = lines[files[-1] + 1:] if files else lines[1:]
    meaningful = [line for line in lines if line and not line.startswith(("Traceback", "File ", "[bt]", "Stack",
                                                                          "Detected at node"))]
    text = (meaningful or [""])[0]
    for prefix in (f"{type(exc).__name__}: ", "MXNetError: "):
        text = text.removeprefix(prefix)
    return f"{type(exc).__name__}: {printable(text, limit)}"


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
    """Parse metadata, or say which file does not carry this project's or carries it incomplete."""
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("producer") != "vgg-frameworks":
        raise ModelFileError(f"{source}: no vgg-frameworks metadata (not exported by vgg export)")
    try:
        problem = _metadata_problem(meta, source)
    except ConfigError as exc:
        raise ModelFileError(str(exc)) from None
    if problem:
        raise ModelFileError(f"{source}: its vgg-frameworks metadata {problem}")
    return meta


def _metadata_problem(meta: dict, source: str | Path) -> str | None:
    """What is missing or wrong in ``meta`` (None if nothing): the keys a server reads, their types, and
    their agreement with the recorded config (input shape, class count); a ConfigError for the config."""
    missing = [key for key in ("input", "output", "layout", "input_shape", "classes", "config") if key not in meta]
    if missing:
        return f"has no {', '.join(missing)}"
    if not all(isinstance(meta[key], str) for key in ("input", "output")):
        return "has input or output names that are not text"
    if meta["layout"] not in LAYOUTS:
        return f"has layout {str(meta['layout'])[:40]!r}, not one of {', '.join(LAYOUTS)}"
    classes = meta["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return "has classes that are not a list of names"
    config = ModelConfig.from_dict(meta["config"], str(source))
    n, c, s = "batch", config.in_channels, config.image_size
    want = [n, c, s, s] if meta["layout"] == "NCHW" else [n, s, s, c]
    if meta["input_shape"] != want:
        return (f"has input_shape {str(meta['input_shape'])[:60]}, but its config and layout make {want}")
    if len(classes) != config.num_classes:
        return f"names {len(classes)} classes for the {config.num_classes} logits of its config"
    return None
