"""Any model file this project reads, opened for inference: a ``vgg train`` model, a canonical safetensors
(with a backend and architecture), a native export or an ONNX file (in ONNX Runtime)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from common.core import arch as archs, backends, canonical
from common.serving import export_flow, formats, onnx_files
from common.tools import loading


@dataclass(frozen=True)
class Opened:
    """A model ready to run: ``forward`` maps images in ``meta['layout']`` to logits."""
    path: Path
    kind: str
    meta: dict
    forward: export_flow.Forward

    @property
    def layout(self) -> str:
        return self.meta["layout"]

    @property
    def image_size(self) -> int:
        return self.meta["config"]["image_size"]

    @property
    def in_channels(self) -> int:
        return self.meta["config"]["in_channels"]


def _exists(path: Path) -> Path:
    if not path.exists():
        raise formats.ModelFileError(f"{path}: no such file or folder")
    return path


def live(path: str | Path, backend: str | None = None, arch: str | None = None,
         resize: int | None = None) -> tuple[ModuleType, object]:
    """``(backend module, model)`` from a ``vgg train`` model file (backend from its suffix), or from a
    canonical safetensors with ``backend``, ``arch`` and ``resize`` (which it needs, having no config)."""
    kind, inferred = formats.kind(path)
    path = _exists(Path(path))
    if kind == "trained":
        if backend and backend != inferred:
            raise formats.ModelFileError(f"{path} is a {inferred} model (suffix {formats.TRAINED[inferred]}), "
                                         f"not {backend}; leave --backend out")
        vgg = loading.backend(inferred)
        try:
            return vgg, vgg.load(path)
        except Exception as exc:  # each framework has its own errors for a truncated or foreign file
            raise formats.ModelFileError(f"{path} is not a readable {inferred} model "
                                         f"({type(exc).__name__}: {str(exc).strip()[:200]})") from None
    if kind == "weights":
        if not backend:
            raise formats.ModelFileError(f"{path}: canonical weights need --backend "
                                         f"({', '.join(backends.NAMES)}) and --arch/--resize")
        blocks, batch_norm = archs.parse(arch or "small")
        image_size = archs.check_resolution(blocks, resize or 224)
        vgg = loading.backend(backend)
        weights = canonical.load(path)
        model = vgg.VGG(blocks, image_size=image_size, batch_norm=batch_norm, hidden=canonical.hidden_of(weights))
        vgg.import_weights(model, weights)
        return vgg, model
    raise formats.ModelFileError(f"{path} is a {kind} export, not a trainable model: give the model file "
                                 f"vgg train wrote ({', '.join(formats.TRAINED.values())}) or a .safetensors")


def open_model(path: str | Path, backend: str | None = None, arch: str | None = None,
               resize: int | None = None) -> Opened:
    """Any model file, ready for inference (see the module docstring)."""
    kind, inferred = formats.kind(path)
    path = _exists(Path(path))
    if kind == "onnx":
        meta = onnx_files.read_metadata(path)
        sess = onnx_files.session(path)
        return Opened(path, kind, meta or onnx_files.infer_metadata(sess, path), onnx_files.runner(sess))
    if kind == "native":
        forward, meta = loading.backend(inferred).load_exported(path)
        return Opened(path, kind, meta, forward)
    vgg, model = live(path, backend, arch, resize)
    meta = formats.metadata(model, vgg.__name__.removeprefix("vgg_"), vgg.LAYOUT, kind)
    return Opened(path, kind, meta, lambda images: vgg.predict(model, images))


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed stably in float64."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
