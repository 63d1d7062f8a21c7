"""Per-epoch training history, the same for all four backends: JSON, CSV and the book's plot."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from common.core import atomic

FIELDS = ("epoch", "train_loss", "train_acc", "test_acc", "examples_per_sec", "seconds")


@dataclass
class History:
    """One row per finished epoch: train loss/accuracy, test accuracy, examples/s, wall seconds."""

    rows: list[dict] = field(default_factory=list)

    def append(self, **row: float) -> None:
        missing = set(FIELDS) - set(row)
        if missing:
            raise ValueError(f"history row lacks {sorted(missing)}")
        self.rows.append({k: row[k] for k in FIELDS})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> list[float]:
        """A column, e.g. ``history["test_acc"]``."""
        if name not in FIELDS:
            raise KeyError(f"unknown history column {name!r}; columns: {', '.join(FIELDS)}")
        return [row[name] for row in self.rows]

    def line(self, index: int = -1) -> str:
        """The book's summary line, e.g. ``loss 0.175, train acc 0.938, test acc 0.928, 1797.1 examples/sec``."""
        r = self.rows[index]
        return (f"loss {r['train_loss']:.3f}, train acc {r['train_acc']:.3f}, test acc {r['test_acc']:.3f}, "
                f"{r['examples_per_sec']:.1f} examples/sec")

    def to_json(self) -> str:
        return json.dumps({"fields": list(FIELDS), "rows": self.rows}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> History:
        return cls([dict(row) for row in json.loads(text)["rows"]])

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def save(self, folder: str | Path, stem: str = "history") -> list[Path]:
        """Write ``stem.json``, ``stem.csv`` and ``stem.png`` into ``folder`` (atomically)."""
        folder = Path(folder)
        paths = [atomic.write_text(folder / f"{stem}.json", self.to_json()),
                 atomic.write_text(folder / f"{stem}.csv", self.to_csv())]
        if self.rows:
            paths.append(self.plot(folder / f"{stem}.png"))
        return paths

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """The book's figure: train loss, train accuracy and test accuracy against epochs."""
        from matplotlib.figure import Figure  # not pyplot: no global backend switch, no GUI machinery

        fig = Figure(figsize=(4.5, 3.2), dpi=120)
        ax = fig.subplots()
        epochs = self["epoch"]
        for name, style in (("train_loss", "-"), ("train_acc", "m--"), ("test_acc", "g-.")):
            ax.plot(epochs, self[name], style, label=name.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, max(epochs) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend()
        if title:
            ax.set_title(title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return atomic.write_bytes(path, buf.getvalue())
