"""Collect the ``benchmarks/distributed_epoch.sh`` runs: one ``distributed-epoch`` record per run into
benchmarks/records/.

    python benchmarks/distributed_table.py runs/dist-*-w1 runs/dist-*-w2

A record carries the run's own provenance (the record ``vgg train`` wrote into the folder) and its engine,
workers and threads. A run collected again is left as it is, and no other run's record is touched:
docs/distributed.md renders its table from the records (``vgg results render``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.tools import records, train_record  # noqa: E402

KIND = "distributed-epoch"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="vgg train --out folders")
    p.add_argument("--records", type=Path, default=records.STORE, help="where the records go")
    args = p.parse_args(argv)
    for folder in map(Path, args.folders):
        if not (folder / train_record.HISTORY).exists():
            print(f"skipping {folder}: no history.json (run not finished)", file=sys.stderr)
            continue
        try:
            path, new = train_record.publish(folder, KIND, args.records)
        except records.RecordError as exc:
            print(f"skipping {folder}: {exc}", file=sys.stderr)
            continue
        print(f"{folder}: {'wrote' if new else 'already recorded in'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
