"""Numerical parity of the backends: one set of canonical weights in, logits, gradients and short SGD
trajectories out, compared pairwise and against the NumPy oracle. Used by the tests and ``vgg parity``."""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from common import oracle, training
from common import weights as canonical

#: quantity -> largest allowed difference, relative to the compared values' scale
TOLERANCES = {"logits": 1e-4, "gradients": 1e-3, "trajectory": 1e-3}
ORACLE = "numpy"


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over the larger of the two magnitudes (the scale of what is compared)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-12)
    return float(np.abs(a - b).max() / scale)


def relative_tree(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """:func:`relative` per tensor, worst case over all canonical names."""
    return max(relative(a[k], b[k]) for k in a)


def to_layout(images_nchw: np.ndarray, layout: str) -> np.ndarray:
    """NCHW NumPy images in a backend's layout."""
    return np.ascontiguousarray(images_nchw if layout == "NCHW" else images_nchw.transpose(0, 2, 3, 1))


def fixed_batch(arch, image_size: int, batch: int = 4, in_channels: int = 1, num_classes: int = 10,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible NCHW batch of images in [0, 1] and labels."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, in_channels, image_size, image_size), dtype=np.float32)
    return images, rng.integers(0, num_classes, batch).astype(np.int64)


def backend_outputs(vgg: ModuleType, weights: dict[str, np.ndarray], arch, image_size: int,
                    images: np.ndarray, labels: np.ndarray) -> dict:
    """Logits, gradients and the export of ``weights`` after import, for one backend module."""
    wmod = importlib.import_module(f"{vgg.__name__}.weights")
    model = vgg.VGG(arch, image_size=image_size, in_channels=images.shape[1])
    wmod.import_weights(model, weights)
    x = to_layout(images, vgg.LAYOUT)
    return {"logits": vgg.predict(model, x), "gradients": wmod.loss_gradients(model, x, labels),
            "export": wmod.export_weights(model)}


def trajectory(vgg: ModuleType, weights: dict[str, np.ndarray], arch, image_size: int,
               batches: list[tuple[np.ndarray, np.ndarray]], lr: float = 0.05) -> dict:
    """Plain SGD from ``weights`` with dropout off, one step per NCHW batch, through the backend's own
    training step: the loss of every step and the canonical weights afterwards."""
    wmod = importlib.import_module(f"{vgg.__name__}.weights")
    trainer = importlib.import_module(f"{vgg.__name__}.trainer")
    to_tensor = importlib.import_module(f"{vgg.__name__}.data").to_tensor
    model = vgg.VGG(arch, image_size=image_size, in_channels=batches[0][0].shape[1], dropout=0.0)
    wmod.import_weights(model, weights)
    engine = trainer.Engine(model, training.Recipe(lr=lr, batch_size=len(batches[0][1])))
    engine.reseed(0)
    losses = [engine.step(*to_tensor(to_layout(x, vgg.LAYOUT), y), lr)[0] for x, y in batches]
    return {"losses": np.array(losses), "trained": wmod.export_weights(model)}


def trajectory_difference(a: dict, b: dict) -> float:
    """Worst of the per-step relative loss differences and the relative differences of the final weights."""
    steps = max(relative(x, y) for x, y in zip(a["losses"], b["losses"]))
    return max(steps, relative_tree(a["trained"], b["trained"]))


def oracle_logits(weights: dict[str, np.ndarray], arch, images: np.ndarray) -> np.ndarray:
    return oracle.forward(weights, arch, images)


def matrix(results: dict[str, dict], quantity: str) -> dict[tuple[str, str], float]:
    """Relative difference of ``quantity`` for every ordered pair of result names."""
    diff = {"gradients": relative_tree, "trajectory": trajectory_difference}.get(quantity, relative)
    return {(a, b): diff(results[a][quantity], results[b][quantity])
            for a in results for b in results if a != b and quantity in results[a] and quantity in results[b]}


def format_matrix(cells: dict[tuple[str, str], float], quantity: str) -> str:
    """A Markdown table of the pairwise differences, each cell marked pass/FAIL against the tolerance."""
    names = list(dict.fromkeys([a for a, _ in cells] + [b for _, b in cells]))
    tol = TOLERANCES[quantity]
    lines = [f"{quantity} (max relative difference, tolerance {tol:g})", "",
             "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for a in names:
        row = ["—" if a == b else (f"{cells[a, b]:.1e} " + ("pass" if cells[a, b] <= tol else "FAIL"))
               for b in names]
        lines.append(f"| {a} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def run(modules: dict[str, ModuleType], arch, image_size: int, batch: int = 8, steps: int = 5,
        lr: float = 0.05, seed: int = 0, log=lambda _: None) -> dict[str, dict[tuple[str, str], float]]:
    """Every parity check on every ordered pair of ``modules`` (name -> backend), plus the oracle's logits.

    Random weights (non-zero biases, so no exact ReLU/max-pool ties) are imported into the first backend
    and *its export* goes to all the others. Returns quantity -> pair -> relative difference.
    """
    first = next(iter(modules.values()))
    source = first.VGG(arch, image_size=image_size, seed=seed)
    importlib.import_module(f"{first.__name__}.weights").import_weights(
        source, canonical.random_weights(arch, image_size=image_size, seed=seed))
    weights = importlib.import_module(f"{first.__name__}.weights").export_weights(source)
    images, labels = fixed_batch(arch, image_size, batch, seed=seed)
    batches = [fixed_batch(arch, image_size, batch, seed=seed + 1 + i) for i in range(steps)]
    results = {ORACLE: {"logits": oracle_logits(weights, arch, images)}}
    for name, vgg in modules.items():
        log(f"parity: {name} ...")
        results[name] = backend_outputs(vgg, weights, arch, image_size, images, labels)
        results[name]["trajectory"] = trajectory(vgg, weights, arch, image_size, batches, lr)
    return {quantity: matrix(results, quantity) for quantity in TOLERANCES}


def passed(matrices: dict[str, dict[tuple[str, str], float]]) -> bool:
    return all(diff <= TOLERANCES[q] for q, cells in matrices.items() for diff in cells.values())
