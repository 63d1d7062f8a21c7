"""How the tools run a child process (``vgg compare``'s cells, ``vgg race``'s runs, ``vgg parity --workers``'s
one-process run): ``python -m MODULE ARGS`` with every framework on the same threads and only the project's
modules importable by name; a child says what it found in tagged JSON lines on stdout, which the parent reads
as they come (framework chatter there is never mistaken for one), and a failed child's reason is one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.runtime.machine import cores
from common.tools import launch

ROOT = Path(__file__).resolve().parents[2]
#: what a child prints before each JSON record
TAG = "@vgg "
#: the label a launched worker's lines carry (``[rank 0] ``: common.tools.launch), which may precede the tag
_LABEL = re.compile(r"\[[^\]]*\] ")


def child_env() -> dict[str, str]:
    """The environment of every child: the same thread count for every framework and BLAS, and only the
    project's own modules importable by their names (never the working folder's)."""
    n = str(cores())
    return launch.safe_path_env({**os.environ, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
                                 "MKL_NUM_THREADS": n, "TF_CPP_MIN_LOG_LEVEL": "2"})


def child_error(stderr: str, returncode: int) -> str:
    """A failed child's reason in one line: the last line of its stderr that is not inside a traceback."""
    reason = next((line for line in reversed(stderr.splitlines()) if line.strip() and not line.startswith(" ")),
                  f"exit status {returncode}")
    return reason.strip()


def emit(record: Mapping[str, Any]) -> None:
    """In a child: hand ``record`` to the parent, one tagged JSON line, at once."""
    print(TAG + json.dumps(record), flush=True)


def record_of(line: str) -> dict | None:
    """The record a child's stdout ``line`` carries (after a launched worker's label, if any), else None."""
    head, tag, body = line.partition(TAG)
    if not tag or head and not _LABEL.fullmatch(head):
        return None
    return json.loads(body)


def run(module: str, args: list[str], on_record: Callable[[dict], None] | None = None, *,
        python: str = sys.executable, env: dict[str, str] | None = None, timeout: float | None = None) -> str | None:
    """Run ``PYTHON -m MODULE ARGS`` in the project's root with ``env`` (default :func:`child_env`), handing
    every record it emits to ``on_record`` as it comes; None, or the child's error as one line. Ctrl-C stops
    the child too, and so do ``timeout`` (seconds; then subprocess.TimeoutExpired) and this process's death
    (a killed ``vgg race`` leaves no run training on)."""
    command = [python, "-m", module, *args]
    expired = threading.Event()
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a chatty framework can never block it
        with subprocess.Popen(command, env=child_env() if env is None else env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=err, text=True, errors="replace", preexec_fn=launch.die_with_parent) as proc:

            def expire() -> None:
                expired.set()
                proc.kill()

            timer = threading.Timer(timeout, expire) if timeout is not None else None
            try:
                if timer is not None:
                    timer.start()
                assert proc.stdout is not None  # stdout=PIPE
                for line in proc.stdout:
                    record = record_of(line)
                    if record is not None and on_record is not None:
                        on_record(record)
                proc.wait()
            except BaseException:
                proc.kill()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
        if timeout is not None and expired.is_set():
            raise subprocess.TimeoutExpired(command, timeout)
        if proc.returncode == 0:
            return None
        err.seek(0)
        return child_error(err.read(), proc.returncode)
