"""The framework-neutral weight format: torchvision's VGG ``state_dict`` names and layouts, in safetensors.

``features.{i}.weight`` is a convolution kernel (out, in, k, k) and ``features.{i}.bias`` its bias, ``i``
counting every conv, batch norm, ReLU and pool as torchvision does; a batch norm's ``features.{i}`` has
``weight`` and ``bias`` (channels,), ``running_mean`` and ``running_var`` (channels,) and an int64
``num_batches_tracked`` (); ``classifier.{0,3,6}.weight`` is (out, in) and ``.bias`` (out,). The first
classifier layer takes its inputs in NCHW flatten order, so a torchvision checkpoint loads unchanged.
Backends convert with the helpers here: OIHW <-> HWIO kernels, (out, in) <-> (in, out) matrices, and the
NCHW <-> NHWC row permutation of the first dense layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save

from common.core import atomic
from common.core.arch import HIDDEN, Arch, feature_size, validate
from common.core.config import ModelConfig
from common.core.layouts import first_dense_to_nchw, first_dense_to_nhwc, hwio_to_oihw, oihw_to_hwio
from common.core.summary import weighted_layers


class WeightsError(ValueError):
    """Weights that do not fit a model: missing, unexpected or mis-shaped tensors."""


#: a batch norm's tensors after weight and bias, in torchvision's order
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
COUNT = STATISTICS[-1]  # the one int64 tensor; every other is float32


def running_statistics(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch norms' running statistics among canonical ``weights``: what a training step changes besides
    the weights, and what has no gradient."""
    return {k: v for k, v in weights.items() if k.rsplit(".", 1)[-1] in STATISTICS}


def expected_shapes(arch, in_channels: int = 1, image_size: int = 224, num_classes: int = 10,
                    batch_norm: bool = False, hidden: int = HIDDEN) -> dict[str, tuple]:
    """Canonical name -> shape for every tensor of a VGG, in torchvision's order."""
    shapes: dict[str, tuple] = {}
    for layer in weighted_layers(arch, in_channels, image_size, num_classes, batch_norm, hidden):
        shapes[f"{layer.name}.weight"] = layer.shape
        shapes[f"{layer.name}.bias"] = layer.shape[:1]
        if layer.kind == "batch_norm":
            shapes.update({f"{layer.name}.{k}": layer.shape if k != COUNT else () for k in STATISTICS})
    return shapes


def model_shapes(model) -> dict[str, tuple]:
    """:func:`expected_shapes` for a backend model (all four carry the ``VGG(...)`` arguments)."""
    return expected_shapes(model.arch, model.in_channels, model.image_size, model.num_classes, model.batch_norm,
                           model.hidden)


def _batch_norm_mismatch(weights: dict, shapes: dict) -> str | None:
    """Say so when weights and model differ in having batch norm at all, the likeliest cause of a misfit."""
    in_weights = [k for k in weights if k.endswith(".running_mean")]
    in_model = any(k.endswith(".running_mean") for k in shapes)
    if in_weights and not in_model:
        return (f"they have batch norm ({in_weights[0]} ...) and the model has none: build it with "
                "batch_norm=True (a _bn arch)")
    if in_model and not in_weights:
        return "the model has batch norm and they have none (no running statistics): build it with batch_norm=False"
    return None


def _hidden_mismatch(weights: dict, shapes: dict) -> str | None:
    """Say so when weights and model differ in the width of the classifier's hidden layers."""
    try:
        theirs = hidden_of(weights)
    except WeightsError:
        return None
    ours = shapes[f"{DENSE[0]}.weight"][0]
    if theirs == ours:
        return None
    return f"their hidden dense layers are {theirs} wide and the model's {ours}: build it with hidden={theirs}"


def check(weights: dict[str, np.ndarray], shapes: dict[str, tuple]) -> None:
    """Raise WeightsError listing every missing, unexpected, mis-shaped or wrongly typed tensor."""
    mismatch = _batch_norm_mismatch(weights, shapes) or _hidden_mismatch(weights, shapes)
    if mismatch:
        raise WeightsError(f"weights do not fit this model: {mismatch}")
    missing = [k for k in shapes if k not in weights]
    unexpected = [k for k in weights if k not in shapes]
    wrong = [f"{k} {tuple(weights[k].shape)} (expected {shapes[k]})" for k in shapes
             if k in weights and tuple(weights[k].shape) != shapes[k]]
    dtype = [f"{k} {weights[k].dtype} (expected {'int64' if k.endswith(COUNT) else 'float32'})" for k in shapes
             if k in weights and weights[k].dtype != (np.int64 if k.endswith(COUNT) else np.float32)]
    problems = [f"{label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
                for label, items in (("missing", missing), ("unexpected", unexpected),
                                     ("mis-shaped", wrong), ("wrong type", dtype)) if items]
    if problems:
        raise WeightsError("weights do not fit this model; " + "; ".join(problems))


def _layers(model, kind: str) -> list[str]:
    return [layer.name for layer in weighted_layers(model.arch, model.in_channels, model.image_size,
                                                    model.num_classes, model.batch_norm, model.hidden)
            if layer.kind == kind]


def conv_pairs(model) -> list[tuple[str, str]]:
    """Canonical (weight, bias) names of every convolution, in order."""
    return [(f"{name}.weight", f"{name}.bias") for name in _layers(model, "conv")]


def norm_layers(model) -> list[str]:
    """Canonical prefix (``features.1``) of every batch norm, in order."""
    return _layers(model, "batch_norm")


DENSE = ("classifier.0", "classifier.3", "classifier.6")


def feature_map(model) -> tuple[int, int]:
    """(channels, side) of the last block's output, what the first dense layer flattens."""
    return validate(model.arch)[-1][1], feature_size(model.arch, model.image_size)


Pair = tuple[np.ndarray, np.ndarray]
#: a batch norm's (weight, bias, running_mean, running_var, num_batches_tracked); gradients give the first two
Norm = tuple[np.ndarray, ...]


def to_canonical(model, convs: Sequence[Pair], denses: Sequence[Pair], layout: str,
                 norms: Sequence[Norm] = ()) -> dict[str, np.ndarray]:
    """Canonical weights from a backend's (kernel, bias) pairs in its native layout, in layer order, and
    its batch norms' tensors (layout-free vectors).

    NCHW backends (torch, MXNet) already hold OIHW kernels and (out, in) matrices; NHWC backends (Keras,
    Flax) hold HWIO kernels and (in, out) matrices whose first one reads an NHWC flatten.
    """
    out: dict[str, np.ndarray] = {}
    for (w_name, b_name), (kernel, bias) in zip(conv_pairs(model), convs, strict=True):
        out[w_name] = np.asarray(kernel) if layout == "NCHW" else hwio_to_oihw(np.asarray(kernel))
        out[b_name] = np.asarray(bias)
    for prefix, tensors in zip(norm_layers(model), norms, strict=True):
        for key, value in zip(("weight", "bias", *STATISTICS), tensors):
            out[f"{prefix}.{key}"] = np.asarray(value, np.int64 if key == COUNT else np.float32).reshape(
                () if key == COUNT else -1)
    for i, (name, (matrix, bias)) in enumerate(zip(DENSE, denses, strict=True)):
        matrix = np.asarray(matrix)
        if layout == "NHWC":
            matrix = first_dense_to_nchw(matrix, *feature_map(model)) if i == 0 else matrix
            matrix = matrix.T
        out[f"{name}.weight"] = np.ascontiguousarray(matrix)
        out[f"{name}.bias"] = np.asarray(bias)
    return out


def from_canonical(model, weights: dict[str, np.ndarray],
                   layout: str) -> tuple[list[Pair], list[Pair], list[Norm]]:
    """Check ``weights`` against ``model`` (nothing is changed on failure), then give (convs, denses) pairs
    in the backend's native layout and the batch norms' five tensors, ready to assign in layer order."""
    check(weights, model_shapes(model))
    convs = [(weights[w] if layout == "NCHW" else oihw_to_hwio(weights[w]), weights[b]) for w, b in conv_pairs(model)]
    norms = [tuple(weights[f"{p}.{k}"] for k in ("weight", "bias", *STATISTICS)) for p in norm_layers(model)]
    denses = []
    for i, name in enumerate(DENSE):
        matrix = weights[f"{name}.weight"]
        if layout == "NHWC":
            matrix = np.ascontiguousarray(matrix.T)
            matrix = first_dense_to_nhwc(matrix, *feature_map(model)) if i == 0 else matrix
        denses.append((matrix, weights[f"{name}.bias"]))
    return convs, denses, norms


# --- files ---------------------------------------------------------------------------------------------

def save_file(weights: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write canonical weights to a safetensors file, atomically."""
    # np.require, not ascontiguousarray, which turns num_batches_tracked's 0-d arrays into 1-d ones
    return atomic.write_bytes(path, save({k: np.require(v, requirements="C") for k, v in weights.items()}))


def load(path: str | Path) -> dict[str, np.ndarray]:
    """Read canonical weights from a safetensors file."""
    try:
        return load_file(str(path))
    except Exception as exc:
        raise WeightsError(f"cannot read weights from {path}: {exc}") from None


def hidden_of(weights: dict[str, np.ndarray]) -> int:
    """The width of the classifier's hidden layers that canonical ``weights`` were made for."""
    first = weights.get(f"{DENSE[0]}.weight")
    if first is None or np.ndim(first) != 2:
        raise WeightsError(f"weights have no 2-d {DENSE[0]}.weight, so they are not a VGG's")
    return int(np.shape(first)[0])


def random_weights(config: ModelConfig | Arch, **options: Any) -> dict[str, np.ndarray]:
    """Glorot-uniform weights and small random biases in the canonical layout for the model ``config``
    describes, drawn from its seed (for parity tests); batch norms get scales and running variances around 1,
    shifts and running means around 0. ``options`` are ``VGG(...)``'s keywords (``ModelConfig.of``)."""
    config = ModelConfig.of(config, **options)
    rng = np.random.default_rng(config.seed)
    out = {}
    for name, shape in model_shapes(config).items():
        if name.endswith(COUNT):
            out[name] = np.array(rng.integers(0, 100), np.int64)
        elif len(shape) == 1 and not name.endswith("bias") or name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif name.endswith("bias") or name.endswith("running_mean"):
            out[name] = rng.uniform(-0.05, 0.05, shape).astype(np.float32)
        else:
            fan_in, fan_out = int(np.prod(shape[1:])), shape[0] * int(np.prod(shape[2:]))
            a = np.sqrt(6.0 / (fan_in + fan_out))
            out[name] = rng.uniform(-a, a, shape).astype(np.float32)
    return out
