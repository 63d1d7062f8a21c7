"""Medians, ranges and ties over interleaved rounds: what ``vgg compare`` reports of a cell (backend, size,
precision, workers) it measured once per round, so that a reader can tell a real difference from noise."""

from __future__ import annotations

import copy
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, cast

from common.tools.report_types import CompareRow, CompareRun, FailedRow, MeasuredRow

#: a run's figures, each reported as its median over the rounds with its range
FIGURES = ("train_ex_s", "infer_ex_s", "train_gflop_s", "build_s", "first_step_s", "import_s", "peak_rss_mb",
           "parity_error", "comm_ms", "forward_ms", "backward_update_ms", "step_ms")
#: the figures of each server under a run's ``latency``
LATENCY_FIGURES = ("p50_ms", "p90_ms", "p99_ms", "export_s")
#: what makes two runs the same cell
CELL = ("backend", "size", "precision", "workers")


def cell(run: Mapping[str, Any]) -> tuple:
    """The cell a run measured."""
    return tuple(run.get(k) for k in CELL)


def is_number(value) -> bool:
    """A measured figure: an int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def figure(run: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The figure at key ``path`` in a run (``("latency", "onnx", "p50_ms")``), None where there is none."""
    value: Any = run
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _paths(run: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The figures ``run`` holds, as key paths: ``("train_ex_s",)``, ``("latency", "onnx", "p99_ms")``."""
    paths: list[tuple[str, ...]] = [(k,) for k in FIGURES if is_number(run.get(k))]
    for served, figures in run.get("latency", {}).items():
        paths += [("latency", served, k) for k in LATENCY_FIGURES if is_number(figures.get(k))]
    return paths


def summarise(runs: Sequence[CompareRun]) -> CompareRow:
    """One cell's row from its rounds' runs: the first successful run's fields (its history, versions, ...)
    with every figure replaced by its median over the successful runs, ``range`` (figure path "a.b" ->
    [min, max]), the ``rounds`` measured and ``failed_rounds`` (round -> error) where any failed."""
    ok = [r for r in runs if "error" not in r]
    failed = {str(r["round"]): r["error"] for r in runs if "error" in r}
    if not ok:  # every round failed: the last one's fields
        return cast(FailedRow, {**{k: v for k, v in runs[-1].items() if k != "round"}, "failed_rounds": failed})
    row: dict[str, Any] = {k: copy.deepcopy(v) for k, v in ok[0].items() if k != "round"}
    row.update(rounds=[r["round"] for r in ok], range={}, **({"failed_rounds": failed} if failed else {}))
    for path in dict.fromkeys(p for r in ok for p in _paths(r)):
        values = [v for r in ok if is_number(v := figure(r, path))]
        target = row
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = statistics.median(values)
        row["range"][".".join(path)] = [min(values), max(values)]
    return cast(MeasuredRow, row)


def spread(row: Mapping[str, Any], key: str) -> tuple[float, float, float] | None:
    """(median, min, max) of the figure ``key`` ("a.b" for a nested one) in a summarised row, or None."""
    median = figure(row, tuple(key.split(".")))
    if not is_number(median):
        return None
    low, high = row.get("range", {}).get(key, (median, median))
    return median, low, high


def text(row: Mapping[str, Any], key: str, fmt: str = ".1f", scale: float = 1.0) -> str:
    """A figure as "median (min-max)", times ``scale``: the median alone where the rounds agree at ``fmt``'s
    precision (or there was one), "—" where the row lacks it."""
    found = spread(row, key)
    if found is None:
        return "—"
    median, low, high = (scale * v for v in found)
    if f"{low:{fmt}}" == f"{high:{fmt}}":
        return f"{median:{fmt}}"
    return f"{median:{fmt}} ({low:{fmt}}-{high:{fmt}})"


def overlap(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Whether two (median, min, max) spreads overlap: their difference is within the noise."""
    return a[1] <= b[2] and b[1] <= a[2]


def versus_fastest(row: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], key: str) -> str:
    """A row's figure ``key`` (higher is better) against the best of the rows of the same size, precision
    and worker count: "fastest" or "0.82x", followed by "(tie with tf, jax)" naming every backend whose
    range overlaps this one's."""
    mine = spread(row, key)
    if mine is None or "error" in row:
        return "—"
    peers = {r["backend"]: s for r in rows if "error" not in r and cell(r)[1:] == cell(row)[1:]
             and (s := spread(r, key)) is not None}
    best = max(s[0] for s in peers.values())
    ties = [name for name, s in peers.items() if name != row["backend"] and overlap(mine, s)]
    verdict = "fastest" if mine[0] == best else f"{mine[0] / best:.2f}x"
    return verdict + (f" (tie with {', '.join(ties)})" if ties else "")
