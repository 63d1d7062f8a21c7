"""Any model file this project reads, opened for inference: a ``vgg train`` model, a canonical safetensors
(with a backend and architecture), a native export or an ONNX file (in ONNX Runtime)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from common.core import arch as archs, backends, canonical
from common.core.config import ConfigError, ModelConfig, check_bounds
from common.runtime import distributed
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


def placed(name: str, device: str) -> ModuleType:
    """Backend ``name``, with its models and exports placed on ``device``: for a GPU, the framework's own
    ``init_distributed(device="gpu")`` (refused in one line where there is none) before anything is built."""
    if device not in distributed.DEVICE_KINDS:
        raise distributed.DistributedError(f"--device {device!r} is not allowed: choose one of "
                                           f"{', '.join(distributed.DEVICE_KINDS)}")
    vgg = loading.backend(name)
    if device == "gpu":
        vgg.init_distributed(device="gpu")
    return vgg


def live(path: str | Path, backend: str | None = None, arch: str | None = None,
         resize: int | None = None, device: str = "cpu") -> tuple[ModuleType, object]:
    """``(backend module, model)`` from a ``vgg train`` model file (backend from its suffix), or from a
    canonical safetensors with ``backend``, ``arch`` and ``resize`` (which it needs, having no config),
    built on ``device``."""
    kind, inferred = formats.kind(path)
    path = _exists(Path(path))
    if kind == "trained":
        if backend and backend != inferred:
            raise formats.ModelFileError(f"{path} is a {inferred} model (suffix {formats.TRAINED[inferred]}), "
                                         f"not {backend}; leave --backend out")
        vgg = placed(inferred, device)
        try:
            return vgg, vgg.load(path)
        except ConfigError:  # a config beyond the bounds, or one the file is too small for: it says so
            raise
        except Exception as exc:  # each framework has its own errors for a truncated or foreign file
            raise formats.ModelFileError(f"{path} is not a readable {inferred} model "
                                         f"({formats.first_line(exc)})") from None
    if kind == "weights":
        if not backend:
            raise formats.ModelFileError(f"{path}: canonical weights need --backend "
                                         f"({', '.join(backends.NAMES)}) and --arch/--resize")
        vgg = placed(backend, device)
        weights = canonical.load(path)
        config = _weights_config(path, weights, arch, resize)
        model = vgg.VGG(config)
        vgg.import_weights(model, weights)
        return vgg, model
    raise formats.ModelFileError(f"{path} is a {kind} export, not a trainable model: give the model file "
                                 f"vgg train wrote ({', '.join(formats.TRAINED.values())}) or a .safetensors")


def _weights_config(path: Path, weights: dict, arch: str | None, resize: int | None) -> ModelConfig:
    """The config canonical ``weights`` fit: blocks and size from ``arch`` and ``resize``, the head's width
    from the file, checked against the bounds and every tensor's shape before anything is built."""
    blocks, batch_norm = archs.parse(arch or "small")
    image_size = archs.check_resolution(blocks, resize or 224)
    try:
        config = check_bounds(ModelConfig(blocks, image_size=image_size, batch_norm=batch_norm,
                                          hidden=canonical.hidden_of(weights)), str(path))
        canonical.check(weights, canonical.model_shapes(config))
    except ConfigError:
        raise
    except ValueError as exc:  # WeightsError, or an ArchError for a head width of 0
        raise formats.ModelFileError(f"{path}: {exc}") from None
    return config


def open_model(path: str | Path, backend: str | None = None, arch: str | None = None,
               resize: int | None = None, trust_model: bool = False, device: str = "cpu") -> Opened:
    """Any model file, ready for inference on ``device`` (see the module docstring). A native export that
    holds code or ops no export of ours has is refused unless ``trust_model`` (each backend's
    ``load_exported``)."""
    kind, inferred = formats.kind(path)
    path = _exists(Path(path))
    if kind == "onnx":
        meta = onnx_files.read_metadata(path)
        sess = onnx_files.session(path, device=device)
        return Opened(path, kind, meta or onnx_files.infer_metadata(sess, path), onnx_files.runner(sess))
    if kind == "native":
        forward, meta = placed(inferred, device).load_exported(path, trust_model=trust_model)
        return Opened(path, kind, meta, forward)
    vgg, model = live(path, backend, arch, resize, device)
    meta = formats.metadata(model, vgg.__name__.removeprefix("vgg_"), vgg.LAYOUT, kind)
    return Opened(path, kind, meta, lambda images: vgg.predict(model, images))


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed stably in float64."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
