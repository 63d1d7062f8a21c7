"""The framework-neutral weight format: torchvision's VGG ``state_dict`` names and layouts, in safetensors.

``features.{i}.weight`` is a convolution kernel (out, in, 3, 3) and ``features.{i}.bias`` its bias, ``i``
counting every conv, ReLU and pool as torchvision does; ``classifier.{0,3,6}.weight`` is (out, in) and
``.bias`` (out,). The first classifier layer takes its inputs in NCHW flatten order, so a torchvision
checkpoint loads unchanged. Backends convert with the helpers here: OIHW <-> HWIO kernels, (out, in) <->
(in, out) matrices, and the NCHW <-> NHWC row permutation of the first dense layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from common import atomic
from common.arch import feature_size, validate
from common.summary import weighted_layers


class WeightsError(ValueError):
    """Weights that do not fit a model: missing, unexpected or mis-shaped tensors."""


def expected_shapes(arch, in_channels: int = 1, image_size: int = 224, num_classes: int = 10) -> dict[str, tuple]:
    """Canonical name -> shape for every tensor of a VGG, in torchvision's order."""
    shapes: dict[str, tuple] = {}
    for layer in weighted_layers(arch, in_channels, image_size, num_classes):
        shapes[f"{layer.name}.weight"] = layer.shape
        shapes[f"{layer.name}.bias"] = layer.shape[:1]
    return shapes


def model_shapes(model) -> dict[str, tuple]:
    """:func:`expected_shapes` for a backend model (all four carry the ``VGG(...)`` arguments)."""
    return expected_shapes(model.arch, model.in_channels, model.image_size, model.num_classes)


def check(weights: dict[str, np.ndarray], shapes: dict[str, tuple]) -> None:
    """Raise WeightsError listing every missing, unexpected, mis-shaped or non-float32 tensor."""
    missing = [k for k in shapes if k not in weights]
    unexpected = [k for k in weights if k not in shapes]
    wrong = [f"{k} {tuple(weights[k].shape)} (expected {shapes[k]})" for k in shapes
             if k in weights and tuple(weights[k].shape) != shapes[k]]
    dtype = [f"{k} {weights[k].dtype}" for k in shapes if k in weights and weights[k].dtype != np.float32]
    problems = [f"{label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
                for label, items in (("missing", missing), ("unexpected", unexpected),
                                     ("mis-shaped", wrong), ("not float32", dtype)) if items]
    if problems:
        raise WeightsError("weights do not fit this model; " + "; ".join(problems))


def conv_pairs(model) -> list[tuple[str, str]]:
    """Canonical (weight, bias) names of every convolution, in order."""
    return [(k, k[:-6] + "bias") for k in model_shapes(model) if k.startswith("features.") and k.endswith("weight")]


DENSE = ("classifier.0", "classifier.3", "classifier.6")


# --- layout conversions ------------------------------------------------------------------------------

def oihw_to_hwio(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))


def hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def nhwc_rows(channels: int, side: int) -> np.ndarray:
    """Index ``p`` such that ``nchw_flat[p]`` is ``nhwc_flat``: feature ``j`` of an NHWC flatten is
    (h, w, c) and sits at position c*side*side + h*side + w of the NCHW flatten."""
    return np.arange(channels * side * side).reshape(channels, side, side).transpose(1, 2, 0).ravel()


def first_dense_to_nhwc(weight_in_out: np.ndarray, channels: int, side: int) -> np.ndarray:
    """Permute the input rows of the first dense layer (in, out) from NCHW to NHWC flatten order."""
    return np.ascontiguousarray(weight_in_out[nhwc_rows(channels, side)])


def first_dense_to_nchw(weight_in_out: np.ndarray, channels: int, side: int) -> np.ndarray:
    """Inverse of :func:`first_dense_to_nhwc`."""
    out = np.empty_like(weight_in_out)
    out[nhwc_rows(channels, side)] = weight_in_out
    return out


def feature_map(model) -> tuple[int, int]:
    """(channels, side) of the last block's output, what the first dense layer flattens."""
    return validate(model.arch)[-1][1], feature_size(model.arch, model.image_size)


Pair = tuple[np.ndarray, np.ndarray]


def to_canonical(model, convs: list[Pair], denses: list[Pair], layout: str) -> dict[str, np.ndarray]:
    """Canonical weights from a backend's (kernel, bias) pairs in its native layout, in layer order.

    NCHW backends (torch, MXNet) already hold OIHW kernels and (out, in) matrices; NHWC backends (Keras,
    Flax) hold HWIO kernels and (in, out) matrices whose first one reads an NHWC flatten.
    """
    out: dict[str, np.ndarray] = {}
    for (w_name, b_name), (kernel, bias) in zip(conv_pairs(model), convs, strict=True):
        out[w_name] = np.asarray(kernel) if layout == "NCHW" else hwio_to_oihw(np.asarray(kernel))
        out[b_name] = np.asarray(bias)
    for i, (name, (matrix, bias)) in enumerate(zip(DENSE, denses, strict=True)):
        matrix = np.asarray(matrix)
        if layout == "NHWC":
            matrix = first_dense_to_nchw(matrix, *feature_map(model)) if i == 0 else matrix
            matrix = matrix.T
        out[f"{name}.weight"] = np.ascontiguousarray(matrix)
        out[f"{name}.bias"] = np.asarray(bias)
    return out


def from_canonical(model, weights: dict[str, np.ndarray], layout: str) -> tuple[list[Pair], list[Pair]]:
    """Check ``weights`` against ``model`` (nothing is changed on failure), then give (convs, denses) pairs
    in the backend's native layout, ready to assign in layer order."""
    check(weights, model_shapes(model))
    convs = [(weights[w] if layout == "NCHW" else oihw_to_hwio(weights[w]), weights[b]) for w, b in conv_pairs(model)]
    denses = []
    for i, name in enumerate(DENSE):
        matrix = weights[f"{name}.weight"]
        if layout == "NHWC":
            matrix = np.ascontiguousarray(matrix.T)
            matrix = first_dense_to_nhwc(matrix, *feature_map(model)) if i == 0 else matrix
        denses.append((matrix, weights[f"{name}.bias"]))
    return convs, denses


# --- files ---------------------------------------------------------------------------------------------

def save_file(weights: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write canonical weights to a safetensors file, atomically."""
    return atomic.write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in weights.items()}))


def load(path: str | Path) -> dict[str, np.ndarray]:
    """Read canonical weights from a safetensors file."""
    try:
        return load_file(str(path))
    except Exception as exc:
        raise WeightsError(f"cannot read weights from {path}: {exc}") from None


def random_weights(arch, in_channels: int = 1, image_size: int = 224, num_classes: int = 10,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Glorot-uniform weights and small random biases in the canonical layout (for parity tests)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_shapes(arch, in_channels, image_size, num_classes).items():
        if name.endswith("bias"):
            out[name] = rng.uniform(-0.05, 0.05, shape).astype(np.float32)
        else:
            fan_in, fan_out = int(np.prod(shape[1:])), shape[0] * int(np.prod(shape[2:]))
            a = np.sqrt(6.0 / (fan_in + fan_out))
            out[name] = rng.uniform(-a, a, shape).astype(np.float32)
    return out
