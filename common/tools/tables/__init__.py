"""The results tables of README.md and docs/, each a function of the project's records: a page holds
``<!-- results: NAME -->`` ... ``<!-- /results -->`` and ``vgg results render`` fills it with what the table
NAME renders, caption included (machine, environment, date), so no figure on a page is typed by hand."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from common.tools import records
from common.tools.records import Record, RecordError

#: the frameworks' distributions named in a caption, by backend
_FRAMEWORKS = {"torch": ("torch",), "tf": ("tensorflow", "keras"), "jax": ("jax", "flax", "optax"),
               "mxnet": ("mxnet",)}


class Store:
    """The records a table may read, by id; asking for one that is absent is a RecordError naming it."""

    def __init__(self, folder: str | os.PathLike = records.STORE):
        self.folder = Path(folder)
        self._by_id = {r.id: r for r in records.find([self.folder])} if self.folder.is_dir() else {}

    def __getitem__(self, record_id: str) -> Record:
        if record_id not in self._by_id:
            raise RecordError(f"record {record_id!r} is not in {self.folder}")
        return self._by_id[record_id]

    def __iter__(self):
        return iter(self._by_id.values())

    def where(self, kind: str | None = None, **match) -> list[Record]:
        """Records of ``kind`` whose top-level fields equal ``match``, oldest first."""
        return [r for r in self._by_id.values() if (kind is None or r.data["kind"] == kind)
                and all(r.data.get(k) == v for k, v in match.items())]


@dataclass
class Rendered:
    """A table's Markdown and the records it read."""

    text: str
    used: list[str] = field(default_factory=list)


#: table name -> function of a Store
TABLES: dict[str, Callable[[Store], Rendered]] = {}


def table(name: str):
    """Register a table renderer under ``name`` (the name a page's marker uses)."""
    def register(fn: Callable[[Store], Rendered]):
        if name in TABLES:
            raise ValueError(f"table {name!r} is registered twice")
        TABLES[name] = fn
        return fn
    return register


def markdown(headers: Iterable[str], rows: Iterable[Iterable]) -> str:
    """A Markdown table."""
    headers = list(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def number(value, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals, '—' where there is none."""
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}f}"


def with_range(result: dict, digits: int = 1) -> str:
    """A result as 'median (low-high)', or its value alone where it has no spread."""
    spread = result.get("spread")
    if not spread or spread.get("low") is None:
        return number(result["value"], digits)
    return f"{number(result['value'], digits)} ({number(spread['low'], digits)}-{number(spread['high'], digits)})"


def environment_text(record: Record, backends: Iterable[str] | None = None) -> str:
    """The environment as a caption names it: its name, Python, NumPy and the frameworks of ``backends``."""
    env = record.data["environment"]
    names = backends or sorted({r["labels"].get("backend") for r in record.data["results"]} - {None})
    parts = [f"Python {env.get('python')}", f"NumPy {env.get('numpy')}"] if env.get("numpy") else \
        [f"Python {env.get('python')}"]
    for name in names:
        versions = [f"{d} {env[d]}" for d in _FRAMEWORKS.get(name, (name,)) if env.get(d)]
        parts += versions
    label = f"`{env['name']}` environment: " if env.get("name") else ""
    return label + ", ".join(parts)


def caption(*used: Record, backends: Iterable[str] | None = None, what: str = "") -> str:
    """The one-line caption under a table: the machine, environment, date and record of each run it shows."""
    lines = []
    for record in used:
        m = record.data["machine"]
        gpu = f", {m['gpu']['name']}" if m.get("gpu") else ""
        lines.append(f"{m['cpu']}, {m['cores']} cores{gpu}; {environment_text(record, backends)}; "
                     f"{record.data['date'][:10]}; `{record.data['command']}`; record `{record.id}`")
    return (f"*{what}" if what else "*") + " / ".join(lines) + "*"


# the tables, one module per family of records; each registers its tables when imported
from common.tools.tables import benchmarks, commands, compare, nodes, serving, training  # noqa: E402,F401
