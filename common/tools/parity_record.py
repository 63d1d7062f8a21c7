"""The record of a ``vgg parity`` run (kind parity): per check and pair of backends (or the NumPy oracle) the
maximum relative difference, and per check its tolerance, so a parity figure in the docs is traced to its run.
``vgg parity`` writes it, and the committed parity reports were converted with the same functions."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from common.core import backends, precision as precisions, tolerances
from common.tools import parity_distributed, records
from common.tools.report_types import DistributedParityReport, ParityMatrices

#: what a parity difference is measured in: max |a - b| over the larger magnitude (common.core.tolerances)
METRIC, UNIT = "max_rel_diff", "rel"


def check_name(quantity: str) -> str:
    """A quantity of common.core.tolerances as a record's ``check`` label: 'train logits' -> 'train_logits'."""
    return quantity.replace(" ", "_")


def pairs(cells: dict[tuple[str, str], float]) -> list[tuple[str, str]]:
    """Each unordered pair of a symmetric matrix once, in the order its names first appear (the oracle first)."""
    names = list(dict.fromkeys([a for a, _ in cells] + [b for _, b in cells]))
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if (a, b) in cells]


def _results(matrices: ParityMatrices, bounds: dict[str, float], **labels) -> list[dict]:
    found = []
    for quantity, cells in matrices.items():
        check = check_name(quantity)
        found += [records.result(METRIC, UNIT, cells[a, b], pair=f"{a}-{b}", check=check, **labels)
                  for a, b in pairs(cells)]
        found.append(records.result("tolerance", UNIT, bounds[quantity], check=check, **labels))
    return found


def record(matrices: ParityMatrices, bounds: dict[str, float], *, arch: str, size: int,
           precision: str = "fp32", name: str | None = None, labels: dict | None = None,
           details: dict | None = None, **provenance) -> dict:
    """A parity record from ``vgg parity``'s matrices (check -> (a, b) -> difference) and their ``bounds``
    (check -> tolerance); ``labels`` go on every result (``format="onnx"``), ``provenance`` to records.make."""
    results = _results(matrices, bounds, precision=precision, size=size, arch=arch, **(labels or {}))
    passed = all(v <= bounds[q] for q, cells in matrices.items() for v in cells.values())
    name = name or f"{arch}-{size}" + ("" if precision == "fp32" else f"-{precision}")
    return records.make("parity", results, name=name, details={"passed": passed, **(details or {})}, **provenance)


def workers_record(outcome: DistributedParityReport, *, arch: str, size: int, details: dict | None = None,
                   **provenance) -> dict:
    """A parity record from ``vgg parity --workers``'s ``outcome`` (parity_distributed.run): per backend and
    engine (``variant`` processes or devices) the difference from one process (None where the run failed), and
    the W-process trajectories' differences across frameworks."""
    workers = outcome["workers"]
    common: dict[str, Any] = {"precision": "fp32", "size": size, "arch": arch, "workers": workers}  # the labels
    results, failed = [], {}
    for backend, runs in outcome["engines"].items():
        for label, value in runs.items():
            if isinstance(value, str):
                failed[f"{backend}, {label}"] = value
            results.append(records.result(METRIC, UNIT, value if isinstance(value, float) else None, backend=backend,
                                          check="engine", variant=label.split()[-1], **common))
    results.append(records.result("tolerance", UNIT, parity_distributed.TOLERANCE, check="engine", **common))
    if outcome["across"]:
        results += _results({"trajectory": outcome["across"]}, tolerances.TOLERANCES, **common)
    engines = {b: backends.BACKENDS[b].engine for b in outcome["engines"]}
    extra = {"passed": parity_distributed.passed(outcome), "engines": engines, **({"failed": failed} if failed else {}),
             "momentum": parity_distributed.MOMENTUM, "lrs": list(parity_distributed.LRS), **(details or {})}
    return records.make("parity", results, name=f"{arch}-{size}-workers{workers}", details=extra, **provenance)


def of_run(args: argparse.Namespace, matrices: ParityMatrices | None = None,
           report: DistributedParityReport | None = None, bounds: dict[str, float] | None = None) -> dict:
    """The record of the ``vgg parity`` run ``args`` describes: from its ``matrices``, or with ``--workers`` from
    its ``report``; the options that shaped the figures go to details."""
    command = "vgg " + shlex.join(args.argv)
    shaped = ("backends", "batch", "seed", "hidden") + (() if args.onnx or report else ("steps", "lr", "device"))
    details = {name: getattr(args, name) for name in shaped}
    if report is not None:
        return workers_record(report, arch=args.arch, size=args.resize, details=details, command=command)
    assert matrices is not None, "of_run: a run without --workers has matrices"
    if args.onnx:
        return record(matrices, precisions.bounds("fp32"), arch=args.arch, size=args.resize, labels={"format": "onnx"},
                      name=f"{args.arch}-{args.resize}-onnx", details=details, command=command)
    return record(matrices, bounds or precisions.bounds(args.precision), arch=args.arch, size=args.resize,
                  precision=args.precision, details=details, command=command)
