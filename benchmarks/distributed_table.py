"""Collect the ``benchmarks/distributed_epoch.sh`` runs into benchmarks/results/distributed-epoch-56.md.

    python benchmarks/distributed_table.py runs/dist-*-w1 runs/dist-*-w2
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.tools.compare_report import machine  # noqa: E402


def main(folders: list[str]) -> None:
    m = machine()
    lines = [f"{m['date']}; {m['cores']} cores ({m['cpu']}); Python {platform.python_version()}", "",
             "| backend | engine | workers x threads | test acc | train acc | loss | examples/s |",
             "|---|---|---|---|---|---|---|"]
    runs = []
    for folder in map(Path, folders):
        if not (folder / "history.json").exists():
            print(f"skipping {folder}: no history.json (run not finished)", file=sys.stderr)
            continue
        run = json.loads((folder / "run.json").read_text())
        last = json.loads((folder / "history.json").read_text())["rows"][-1]
        runs.append((run["backend"], run["world"]["processes"], run, last))
    for backend, _, run, last in sorted(runs, key=lambda r: (r[0], r[1])):
        w = run["world"]
        lines.append(f"| {backend} | {w['engine']} | {w['processes']} x {w['threads']} | {last['test_acc']:.3f} | "
                     f"{last['train_acc']:.3f} | {last['train_loss']:.3f} | {last['examples_per_sec']:.0f} |")
    table = "\n".join(lines)
    (ROOT / "benchmarks" / "results" / "distributed-epoch-56.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
