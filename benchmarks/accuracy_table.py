"""Collect finished ``vgg train`` runs of ``benchmarks/accuracy.sh``: one ``accuracy`` record per run into
benchmarks/records/, and each run's history and plot into benchmarks/results/.

    python benchmarks/accuracy_table.py runs/torch-56 runs/tf-56 runs/jax-56 runs/mxnet-56

A record carries the run's own provenance (the record ``vgg train`` wrote into the folder). A run collected
again is left as it is, and no other run's record is touched: docs/results.md renders its tables from the
records (``vgg results render``). Histories are named for backend, arch (left out for the book's ``small``)
and resolution: history-torch-56.json, history-torch-small_bn-56.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.tools import records, train_record  # noqa: E402

KIND = "accuracy"


def history_name(settings: dict) -> str:
    """The history's name in the results folder, e.g. ``history-torch-56``, ``history-torch-small_bn-56``."""
    tag = "" if settings["arch"] == "small" else f"{settings['arch']}-"
    return f"history-{settings['backend']}-{tag}{settings['resize']}"


def collect(folder: Path, store: Path, results: Path) -> None:
    """One finished run: its history and plot copied into ``results``, its record written into ``store``."""
    settings = json.loads((folder / train_record.SETTINGS).read_text())
    stem = history_name(settings)
    shutil.copyfile(folder / train_record.HISTORY, results / f"{stem}.json")
    if (folder / "history.png").exists():
        shutil.copyfile(folder / "history.png", results / f"{stem}.png")
    report = os.path.relpath(results / f"{stem}.json", ROOT)
    path, new = train_record.publish(folder, KIND, store, report=report)
    print(f"{folder}: {'wrote' if new else 'already recorded in'} {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="vgg train --out folders")
    p.add_argument("--records", type=Path, default=records.STORE, help="where the records go")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="where histories go")
    args = p.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    for folder in map(Path, args.folders):
        if not (folder / train_record.HISTORY).exists():
            print(f"skipping {folder}: no history.json (run not finished)", file=sys.stderr)
            continue
        try:
            collect(folder, args.records, args.results)
        except records.RecordError as exc:
            print(f"skipping {folder}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
