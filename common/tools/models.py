"""Any model file this project reads, opened for inference: a ``vgg train`` model, a canonical safetensors
(with a backend and architecture), a native export or an ONNX file (in ONNX Runtime)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from common.core import arch as archs, backends, canonical
from common.core.config import ConfigError, ModelConfig, check_bounds
from common.runtime import distributed
from common.runtime.contract import Backend
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


def placed(name: str, device: str) -> Backend:
    """Backend ``name``, with its models and exports placed on ``device``: for a GPU, the framework's own
    ``init_distributed(device="gpu")`` (refused in one line where there is none) before anything is built."""
    if device not in distributed.DEVICE_KINDS:
        raise distributed.DistributedError(f"--device {device!r} is not allowed: choose one of "
                                           f"{', '.join(distributed.DEVICE_KINDS)}")
    vgg = loading.backend(name)
    if device == "gpu":
        vgg.init_distributed(device="gpu")
    return vgg


def live(path: str | Path, backend: str | None = None, config: ModelConfig | None = None,
         device: str = "cpu") -> tuple[Backend, object]:
    """``(backend module, model)`` from a ``vgg train`` model file (backend from its suffix), or from a
    canonical safetensors with ``backend`` and the ``config`` it was made for (default the small VGG at
    224x224; the head's width comes from the file), built on ``device``."""
    kind, inferred = formats.kind(path)
    path = _exists(Path(path))
    if kind == "trained":
        assert inferred is not None  # a trained model's suffix names its backend
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
        model = vgg.VGG(_fitted(path, weights, config or ModelConfig(archs.small())))
        vgg.import_weights(model, weights)
        return vgg, model
    raise formats.ModelFileError(f"{path} is a {kind} export, not a trainable model: give the model file "
                                 f"vgg train wrote ({', '.join(formats.TRAINED.values())}) or a .safetensors")


def _fitted(path: Path, weights: dict, config: ModelConfig) -> ModelConfig:
    """``config`` with the head's width of canonical ``weights``, checked against the bounds and every
    tensor's shape before anything is built."""
    try:
        fitted = check_bounds(replace(config, hidden=canonical.hidden_of(weights)), str(path))
        canonical.check(weights, canonical.model_shapes(fitted))
    except ConfigError:
        raise
    except ValueError as exc:  # WeightsError, or an ArchError for a head width of 0
        raise formats.ModelFileError(f"{path}: {exc}") from None
    return fitted


def open_model(path: str | Path, backend: str | None = None, config: ModelConfig | None = None,
               trust_model: bool = False, device: str = "cpu") -> Opened:
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
        assert inferred is not None  # so does a native export's
        forward, meta = placed(inferred, device).load_exported(path, trust_model=trust_model)
        return Opened(path, kind, meta, forward)
    vgg, model = live(path, backend, config, device)
    meta = formats.metadata(model, vgg.NAME, vgg.LAYOUT, kind)
    return Opened(path, kind, meta, lambda images: vgg.predict(model, images))


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed stably in float64."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
