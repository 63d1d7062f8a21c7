"""Collect finished ``vgg train`` runs into benchmarks/results/: each final History and a Markdown table.

    python benchmarks/accuracy_table.py runs/torch-56 runs/tf-56 runs/jax-56 runs/mxnet-56

Files are named for backend, arch (left out for the book's ``small``) and resolution: history-torch-56.json,
history-torch-small_bn-56.json, accuracy-56.md, accuracy-small_bn-56.md.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main(folders: list[str]) -> None:
    lines = ["| backend | test acc | train acc | loss | examples/s | minutes |", "|---|---|---|---|---|---|"]
    tag = ""
    for folder in map(Path, folders):
        history = folder / "history.json"
        if not history.exists():
            print(f"skipping {folder}: no history.json (run not finished)", file=sys.stderr)
            continue
        run = json.loads((folder / "run.json").read_text())
        rows = json.loads(history.read_text())["rows"]
        last = rows[-1]
        tag = "" if run["arch"] == "small" else f"{run['arch']}-"
        shutil.copyfile(history, RESULTS / f"history-{run['backend']}-{tag}{run['resize']}.json")
        shutil.copyfile(folder / "history.png", RESULTS / f"history-{run['backend']}-{tag}{run['resize']}.png")
        lines.append(f"| {run['backend']} | {last['test_acc']:.3f} | {last['train_acc']:.3f} | "
                     f"{last['train_loss']:.3f} | {sum(r['examples_per_sec'] for r in rows) / len(rows):.0f} | "
                     f"{sum(r['seconds'] for r in rows) / 60:.1f} |")
    table = "\n".join(lines)
    (RESULTS / f"accuracy-{tag}56.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
