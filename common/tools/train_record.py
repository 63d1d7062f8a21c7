"""The record of a finished ``vgg train`` run: its final figures (test and train accuracy, loss, examples/s,
seconds, epochs) with the recipe and the per-epoch history, built from the run's settings (``run.json``) and
history, so that ``vgg train``, the accuracy and distributed-epoch collectors and the converted results
share one shape."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from common.tools import records

#: the record ``vgg train`` writes into its --out folder
KIND = "train"
#: the files of a run folder a record is built from
SETTINGS, HISTORY = "run.json", "history.json"
#: the recipe's settings, as run.json holds them
RECIPE = ("epochs", "lr", "batch_size", "momentum", "weight_decay", "schedule", "warmup_epochs", "seed", "hidden",
          "limit")


def labels(settings: dict) -> dict:
    """The cell a run's figures belong to: backend, arch, size, precision, workers (and devices where several)."""
    world = settings.get("world") or {}
    devices = world.get("devices", 1)
    return {"backend": settings["backend"], "arch": settings["arch"], "size": settings["resize"],
            "precision": settings.get("precision", "fp32"), "workers": world.get("processes", 1),
            "devices": devices if devices > 1 else None}


def results(settings: dict, rows: list[dict]) -> list[dict]:
    """The final figures: the last epoch's accuracies and loss, the mean of the epochs' examples/s (as the
    accuracy tables always gave it), the epochs' seconds summed and the epoch count; a figure the history
    lacks (None) is left out."""
    cell, last = labels(settings), rows[-1]
    speeds = [r["examples_per_sec"] for r in rows if r.get("examples_per_sec") is not None]
    seconds = [r["seconds"] for r in rows if r.get("seconds") is not None]
    figures = [("test_acc", "fraction", last.get("test_acc")), ("train_acc", "fraction", last.get("train_acc")),
               ("loss", "nats", last.get("train_loss")),
               ("train_ex_s", "ex/s", statistics.fmean(speeds) if speeds else None),
               ("seconds", "s", sum(seconds) if len(seconds) == len(rows) else None), ("epochs", "epochs", len(rows))]
    return [records.result(metric, unit, value, **cell) for metric, unit, value in figures if value is not None]


def name(settings: dict) -> str:
    """The record's name: backend, arch and size, the precision where not fp32, the workers where several."""
    cell = labels(settings)
    parts = [cell["backend"], cell["arch"], str(cell["size"])]
    parts += [cell["precision"]] if cell["precision"] != "fp32" else []
    parts += [f"w{cell['workers']}"] if cell["workers"] > 1 else []
    return "-".join(parts)


def record(settings: dict, rows: list[dict], kind: str = KIND, **provenance) -> dict:
    """The record of one run from its ``settings`` (run.json's keys) and history ``rows``; ``provenance``
    (command, date, machine_info, environment_info, commit_info, report, source) as :func:`records.make`
    takes it, this process's where left out."""
    if not rows:
        raise records.RecordError("the run has no finished epoch: nothing to record")
    details = {"recipe": {k: settings.get(k) for k in RECIPE}, "world": settings.get("world"), "history": rows}
    return records.make(kind, results(settings, rows), name=name(settings), details=details, **provenance)


def from_folder(folder: str | Path, kind: str = KIND, **provenance) -> dict:
    """The record of the run in ``folder`` (its run.json and history.json)."""
    folder = Path(folder)
    settings = json.loads((folder / SETTINGS).read_text())
    rows = json.loads((folder / HISTORY).read_text())["rows"]
    return record(settings, rows, kind, **provenance)


def in_folder(folder: str | Path) -> list[records.Record]:
    """The train records ``vgg train`` wrote into ``folder``, oldest first (a resumed run adds one)."""
    return [r for r in records.find([Path(folder)]) if r.data["kind"] == KIND and r.path.parent == Path(folder)]


def write(folder: str | Path) -> Path:
    """Write the record of the run just finished in ``folder`` into it, with this process's provenance."""
    return records.write(from_folder(folder), folder)


def published(folder: str | Path, kind: str, report: str | None = None) -> dict:
    """The run in ``folder`` as a benchmark publishes it (kind ``accuracy``, ``distributed-epoch``): the same
    figures, with the provenance of the record ``vgg train`` wrote there (the run's own command, date,
    machine, environment and commit), not the collector's."""
    own = in_folder(folder)
    if not own:
        raise records.RecordError(f"{folder}: no record of its run (written by vgg train at the end of a run)")
    run = own[-1].data
    return from_folder(folder, kind, command=run["command"], date=run["date"], machine_info=run["machine"],
                       environment_info=run["environment"], commit_info=(run["commit"], run["dirty"]),
                       report=report, source={"run": str(folder), "record": own[-1].id})


def publish(folder: str | Path, kind: str, store: str | Path, report: str | None = None) -> tuple[Path, bool]:
    """Write the run in ``folder`` into ``store`` as a ``kind`` record, once: (its path, whether it was new).
    A run collected again finds its record there and leaves it as it is; no other record is touched."""
    record = published(folder, kind, report)
    path = Path(store) / f"{record['id']}.json"
    if path.exists():
        return path, False
    return records.write(record, store), True
