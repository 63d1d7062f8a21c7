"""Numerical parity of the backends: one set of canonical weights in, logits, gradients and short SGD
trajectories out, compared pairwise and against the NumPy oracle. Used by the tests and ``vgg parity``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from common.core import canonical, layouts, oracle, precision as precisions, tolerances
from common.core.arch import Arch, last_of_block
from common.core.config import ModelConfig
from common.core.normalization import TORCH_BN
from common.runtime import training
from common.runtime.contract import Backend
from common.tools.report_types import ParityMatrices

ORACLE = "numpy"


def without_zero_gradients(gradients: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop the biases of convolutions followed by a batch norm: in training mode the batch mean removes
    any constant, so their gradient is zero and what a backend returns is float32 rounding."""
    norms = [k.split(".")[1] for k in gradients if k.startswith("features.") and k.endswith(".weight")
             and gradients[k].ndim == 1]  # a batch norm's scale is the only 1-d weight
    before = {f"features.{int(i) - 1}.bias" for i in norms}
    return {k: v for k, v in gradients.items() if k not in before}


def _model(vgg: Backend, config: ModelConfig, weights: dict[str, np.ndarray]) -> Any:
    """``config``'s model in ``vgg`` with dropout off, holding ``weights``."""
    model = vgg.VGG(replace(config, dropout=0.0, hidden=canonical.hidden_of(weights)))
    vgg.import_weights(model, weights)
    return model


def backend_outputs(vgg: Backend, config: ModelConfig, weights: dict[str, np.ndarray], images: np.ndarray,
                    labels: np.ndarray) -> dict:
    """Logits, gradients and the export of ``weights`` after import, for one backend module; with batch
    norm also training mode's logits and gradients and the running statistics that forward leaves."""
    model = _model(vgg, config, weights)
    x = layouts.images_from_nchw(images, vgg.LAYOUT)
    out = {"logits": vgg.predict(model, x), "gradients": vgg.loss_gradients(model, x, labels),
           "export": vgg.export_weights(model)}
    if config.batch_norm:
        logits, gradients = vgg.training_outputs(model, x, labels)
        out.update({"train logits": logits, "train gradients": without_zero_gradients(gradients),
                    "running statistics": canonical.running_statistics(vgg.export_weights(model))})
    return out


def oracle_outputs(weights: dict[str, np.ndarray], arch: Arch, images: np.ndarray, batch_norm: bool = False,
                   precision: str = "fp32") -> dict:
    """The NumPy oracle's logits (rounded as ``precision`` rounds); with batch norm also training mode's and
    the running statistics after it."""
    out: dict[str, np.ndarray | dict[str, np.ndarray]] = {
        "logits": oracle.forward(dict(weights), arch, images, batch_norm, precision=precision)}
    if batch_norm:
        after = dict(weights)
        out["train logits"] = oracle.forward(after, arch, images, batch_norm, training=True, precision=precision)
        out["running statistics"] = canonical.running_statistics(after)
    return out


def oracle_statistics(weights: dict[str, np.ndarray], arch: Arch, batches: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Running statistics after one training forward per batch with the weights held fixed (lr 0)."""
    after = dict(weights)
    for images, _ in batches:
        oracle.forward(after, arch, images, batch_norm=True, training=True)
    return canonical.running_statistics(after)


def trajectory(vgg: Backend, config: ModelConfig, weights: dict[str, np.ndarray],
               batches: list[tuple[np.ndarray, np.ndarray]], lr: float = 0.05, momentum: float = 0.0,
               weight_decay: float = 0.0, label_smoothing: float = 0.0) -> dict:
    """SGD (plain unless ``momentum``/``weight_decay``) from ``weights`` with dropout off, one step per NCHW
    batch, through the backend's own training step and its loss (with ``label_smoothing``): the loss of
    every step and the canonical weights (and running statistics) afterwards."""
    model = _model(vgg, config, weights)
    recipe = training.Recipe(batch_size=len(batches[0][1]), momentum=momentum, weight_decay=weight_decay,
                             label_smoothing=label_smoothing)
    engine = vgg.Engine(model, recipe)  # each step takes its lr
    engine.reseed(0)
    losses = [engine.step(*vgg.to_tensor(layouts.images_from_nchw(x, vgg.LAYOUT), y), lr)[0] for x, y in batches]
    return {"losses": np.array(losses), "trained": vgg.export_weights(model)}


def trajectory_difference(a: dict, b: dict) -> float:
    """Worst of the per-step relative loss differences and the final weights' relative L2 difference: within a
    few SGD steps float32 rounding too can flip one ReLU or max-pool choice (the raced small_bn at 32x32: TF's
    third step, 2.0e-3 max-relative in one convolution, 1.1e-5 in L2), which moves a few weights a lot and the
    network little."""
    steps = max(tolerances.relative(x, y) for x, y in zip(a["losses"], b["losses"]))
    return max(steps, tolerances.relative_l2(a["trained"], b["trained"]))


def oracle_logits(weights: dict[str, np.ndarray], arch: Arch, images: np.ndarray,
                  batch_norm: bool = False) -> np.ndarray:
    """The NumPy oracle's float32 logits for NCHW ``images``."""
    return oracle.forward(dict(weights), arch, images, batch_norm)


def matrix(results: dict[str, dict], quantity: str, precision: str = "fp32") -> dict[tuple[str, str], float]:
    """Relative difference of ``quantity`` for every ordered pair of result names: the trained weights' as a
    relative L2 norm, and in reduced precision the gradients' too (see common.core.precision.bounds)."""
    tree = tolerances.relative_l2 if precisions.get(precision).mixed else tolerances.relative_tree
    relative = tolerances.relative if "logits" in quantity else tree
    diff = trajectory_difference if quantity == "trajectory" else relative
    return {(a, b): diff(results[a][quantity], results[b][quantity])
            for a in results for b in results if a != b and quantity in results[a] and quantity in results[b]}


def bounds_of(config: ModelConfig, batch: int = 8) -> dict[str, float]:
    """The parity bounds of ``config`` on :func:`run`'s batch: its precision's (common.core.precision.bounds),
    and in mixed precision with batch norm training mode's logits and gradients at least what the batch's
    statistics make of the rounding (tolerances.batch_norm_bounds, from the oracle's training forward)."""
    out = precisions.bounds(config.precision)
    p = precisions.get(config.precision)
    if not (p.mixed and config.batch_norm):
        return out
    weights = canonical.random_weights(config)
    images, _ = tolerances.fixed_batch(config.arch, config.image_size, batch, config.in_channels,
                                       config.num_classes, config.seed)
    after = dict(weights)
    oracle.forward(after, config.arch, images, batch_norm=True, training=True)
    train = tolerances.batch_norm_bounds(p.unit_roundoff, tolerances.batch_spreads(weights, after, TORCH_BN.momentum),
                                         last_of_block(config.arch))
    return {**out, **{q: max(out[q], bound) for q, bound in train.items()}}


def format_matrix(cells: dict[tuple[str, str], float], quantity: str, precision: str = "fp32",
                  tol: float | None = None) -> str:
    """A Markdown table of the pairwise differences, each cell marked pass/FAIL against the tolerance
    (``tol``, else ``precision``'s bound for ``quantity``)."""
    names = list(dict.fromkeys([a for a, _ in cells] + [b for _, b in cells]))
    tol = precisions.bounds(precision)[quantity] if tol is None else tol
    lines = [f"{quantity} (max relative difference, tolerance {tol:g})", "",
             "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for a in names:
        row = ["—" if a == b else (f"{cells[a, b]:.1e} " + ("pass" if cells[a, b] <= tol else "FAIL"))
               for b in names]
        lines.append(f"| {a} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def run(modules: dict[str, Backend], config: ModelConfig, batch: int = 8, steps: int = 5, lr: float = 0.05,
        log: Callable[[str], None] = lambda _: None, momentum: float = 0.0,
        weight_decay: float = 0.0, label_smoothing: float = 0.0) -> ParityMatrices:
    """Every parity check of the model ``config`` describes (its seed seeds weights and batches) on every
    ordered pair of ``modules`` (name -> backend), plus the oracle's (at ``config.precision``: the backends'
    mixed precision against the rounding oracle, common.core.precision).

    Random weights (non-zero biases, so no exact ReLU/max-pool ties) are imported into the first backend
    and *its export* goes to all the others. With batch norm, the running statistics after ``steps``
    training steps at lr 0 (weights held, so the oracle can follow) are compared too. The trajectory's SGD
    takes ``momentum``, ``weight_decay`` and ``label_smoothing`` (a raced recipe's). Returns quantity ->
    pair -> relative difference.
    """
    arch, size, seed = config.arch, config.image_size, config.seed
    first = next(iter(modules.values()))
    random = canonical.random_weights(config)
    weights = first.export_weights(_model(first, config, random))
    images, labels = tolerances.fixed_batch(arch, size, batch, config.in_channels, config.num_classes, seed)
    batches = [tolerances.fixed_batch(arch, size, batch, config.in_channels, config.num_classes, seed + 1 + i)
               for i in range(steps)]
    results = {ORACLE: oracle_outputs(weights, arch, images, config.batch_norm, config.precision)}
    if config.batch_norm:
        results[ORACLE]["statistics after steps"] = oracle_statistics(weights, arch, batches)
    for name, vgg in modules.items():
        log(f"parity: {name} ...")
        results[name] = backend_outputs(vgg, config, weights, images, labels)
        results[name]["trajectory"] = trajectory(vgg, config, weights, batches, lr, momentum, weight_decay,
                                                 label_smoothing)
        if config.batch_norm:
            held = trajectory(vgg, config, weights, batches, 0.0)["trained"]
            results[name]["statistics after steps"] = canonical.running_statistics(held)
    return {quantity: matrix(results, quantity, config.precision) for quantity in tolerances.TOLERANCES
            if any(quantity in r for r in results.values())}


def passed(matrices: ParityMatrices, precision: str = "fp32", bounds: dict[str, float] | None = None) -> bool:
    """Whether every difference is within its quantity's bound: ``bounds`` (:func:`bounds_of`), else
    ``precision``'s."""
    bounds = precisions.bounds(precision) if bounds is None else bounds
    return all(diff <= bounds[q] for q, cells in matrices.items() for diff in cells.values())
