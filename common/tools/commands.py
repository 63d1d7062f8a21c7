"""What several ``vgg`` sub-commands share once they run: the report folder, the command line they record,
an output folder proved writable, a GPU checked before anything is written, and a precision's note."""

from __future__ import annotations

import contextlib
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from common.core.precision import PrecisionWarning
from common.tools import loading


def report_folder(out: str | None, kind: str) -> Path:
    """``--out``, or by default ``reports/<kind>-<time>`` (compare, race and parity write there)."""
    return Path(out or f"reports/{kind}-{time.strftime('%Y%m%d-%H%M%S')}")


def command_line(command: str) -> str:
    """The ``vgg <command> ...`` line a report records: the shell's own arguments when ``vgg <command>`` was
    run from it, else the sub-command alone."""
    return shlex.join(["vgg", *sys.argv[1:]]) if sys.argv[1:2] == [command] else f"vgg {command}"


def writable_out(out: Path) -> Path:
    """Create ``out`` and prove it writable."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as exc:
        raise OSError(f"--out {out} is not writable ({exc.strerror or exc})") from None
    return out


def on_gpus(names: list[str], device: str) -> None:
    """Under ``--device gpu``, every backend of ``names`` on its GPU: a missing GPU (or GPU build) is one line
    here, before anything is written."""
    if device == "gpu":
        for name in names:
            loading.backend(name).init_distributed(device="gpu")


@contextlib.contextmanager
def noted(note: str | None, prog: str, say: bool = True) -> Iterator[None]:
    """Print a precision's note as one line (when ``say``), and keep its warning from repeating it."""
    if note and say:
        print(f"{prog}: note: {note}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        yield
