"""What ``vgg compare``'s and ``vgg race``'s reports share: a chart's title (what it shows, on which machine,
when), a chart written as a PNG, and the table of the environments the backends ran in."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from common.core import atomic


def title(machine: Mapping[str, Any], what: str) -> str:
    """A chart's title: what it shows, then the machine (CPU model, vector ISA, cores) and the date."""
    return f"{what}\n{machine['cpu']}; {machine['cores']} cores; {machine['date'][:10]}"


def new_figure(**options):
    """A matplotlib Figure: not pyplot, so no global backend switch and no GUI machinery."""
    from matplotlib.figure import Figure

    return Figure(dpi=110, **options)


def save_png(fig, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic.write_bytes(path, buf.getvalue())


def environment_table(runs: Iterable[Mapping[str, Any]]) -> list[str]:
    """One Markdown row per backend of ``runs`` (its first run with an ``env``): the Python, NumPy and framework
    versions it ran on and its interpreter ("?" where a failed run recorded only the interpreter)."""
    seen: dict[str, dict] = {}
    for run in runs:
        if "env" in run:
            seen.setdefault(run["backend"], run["env"])
    lines = ["| backend | Python | NumPy | framework | interpreter |", "|---|---|---|---|---|"]
    for name, env in seen.items():
        framework = ", ".join(f"{d} {v}" for d, v in env.items() if d not in ("python", "numpy", "executable"))
        interpreter = f"`{env['executable']}`" if env.get("executable") else "?"
        lines.append(f"| {name} | {env.get('python', '?')} | {env.get('numpy', '?')} | {framework or '?'} | "
                     f"{interpreter} |")
    return lines
