"""How the backends' outputs are compared: the tolerances, the relative error they bound, and the fixed
batch they are compared on. Used by the parity tools and by every export's reload check."""

from __future__ import annotations

import numpy as np

#: quantity -> largest allowed difference, relative to the compared values' scale. With batch norm the
#: logits and gradients are compared in eval mode (running statistics) and in training mode (the batch's),
#: and the running statistics after a training forward and after the SGD steps, with the same tolerances.
TOLERANCES = {"logits": 1e-4, "gradients": 1e-3, "trajectory": 1e-3}
TOLERANCES.update({"train logits": TOLERANCES["logits"], "train gradients": TOLERANCES["gradients"],
                   "running statistics": TOLERANCES["logits"], "statistics after steps": TOLERANCES["logits"]})


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over the larger of the two magnitudes (the scale of what is compared)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-12)
    return float(np.abs(a - b).max() / scale)


def relative_tree(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """:func:`relative` per tensor, worst case over all canonical names."""
    return max(relative(a[k], b[k]) for k in a)


def fixed_batch(arch, image_size: int, batch: int = 4, in_channels: int = 1, num_classes: int = 10,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible NCHW batch of images in [0, 1] and labels."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, in_channels, image_size, image_size), dtype=np.float32)
    return images, rng.integers(0, num_classes, batch).astype(np.int64)


def relative_l2(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """||a - b|| over the larger of ||a|| and ||b||, every tensor of the two trees as one vector: the gradient
    measure of reduced precision, where a ReLU or max-pool choice that rounding flips moves one element a lot
    and the whole little."""
    diff = sum(float(np.sum((np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)) ** 2)) for k in a)
    size = max(sum(float(np.sum(np.asarray(t[k], np.float64) ** 2)) for k in a) for t in (a, b))
    return float(np.sqrt(diff / max(size, 1e-24)))


def batch_spreads(before: dict[str, np.ndarray], after: dict[str, np.ndarray], momentum: float) -> list[float]:
    """Per batch norm, in layer order: the mean over channels of (batch mean / batch std)^2 of its input in
    one training forward, recovered from the running statistics ``before`` and ``after`` it (canonical names,
    ``momentum`` PyTorch's). Uses the unbiased variance the running one is updated with (n/(n-1) larger)."""
    def layer(name: str) -> int:
        return int(name.split(".")[1])

    means = sorted((k for k in after if k.endswith(".running_mean")), key=layer)
    out = []
    for key in means:
        var_key = key[: -len("mean")] + "var"
        mean = (np.asarray(after[key], np.float64) - (1 - momentum) * np.asarray(before[key], np.float64)) / momentum
        var = (np.asarray(after[var_key], np.float64)
               - (1 - momentum) * np.asarray(before[var_key], np.float64)) / momentum
        out.append(float(np.mean(mean ** 2 / np.maximum(var, 1e-30))))
    return out


def batch_norm_bounds(u: float, spreads: list[float], pooled: list[bool], dense_relus: int = 2,
                      roundings: int = 4) -> dict[str, float]:
    """Train-mode logits (max relative) and gradients (relative L2) of two runs of one network that round
    differently (``roundings``: per convolution output, both runs together; 1 for an oracle or a kernel adding
    its bias in float32, 2 for a rounded product plus a rounded bias add) to unit roundoff ``u``.

    A batch norm in training mode removes its input's batch mean m but not the rounding error, whose size
    follows the input's root mean square sqrt(m^2 + std^2): relative to the normalised output (unit std) an
    error grows by sqrt(1 + (m/std)^2) at each one, the carried error and the fresh rounding (RMS u/sqrt(3)
    per rounding) alike. ``spreads`` are those (m/std)^2, averaged over channels (:func:`batch_spreads`):
    s_l^2 = (1 + spreads[l]) (s_{l-1}^2 + roundings u^2 / 3) is the RMS error of norm l's output, and the
    logits' relative error that of the last plus the dense layers' roundings. A ReLU on a unit-normal input
    with error s decides differently with probability about s / pi, a 2x2 max pool (``pooled``: after that
    norm) about 3 s / pi (three rivals); each changed decision moves one backpropagated value entirely, so the
    gradients' relative L2 error is about sqrt(sum of those fractions), the two dense ReLUs at the logits' s."""
    s2, errors = 0.0, []
    for spread in spreads:
        s2 = (1 + spread) * (s2 + roundings * u * u / 3)
        errors.append(np.sqrt(s2))
    logits = float(np.sqrt(s2 + (dense_relus + 1) * roundings * u * u / 3))
    flips = sum(e * (1 + 3 * pool) for e, pool in zip(errors, pooled, strict=True)) + dense_relus * logits
    return {"train logits": logits, "train gradients": float(np.sqrt(flips / np.pi))}
