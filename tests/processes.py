"""Real ``vgg`` subprocesses for the tests: start one, and wait for its first checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.runtime import checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _as_in_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it. A suite started in the background by a non-interactive shell
    (``bash -c '... &'``, some CI runners) inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler, so the Ctrl-C tests would test the shell instead of ``vgg``."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def vgg_cli(*args: str, **kw) -> subprocess.Popen:
    """``vgg ...`` as a real subprocess (the installed console script's module), with Ctrl-C working."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "common.tools.cli", *args], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_as_in_a_terminal, **kw)


def wait_for_first_checkpoint(proc: subprocess.Popen, folder: Path, timeout: float = 300) -> Path:
    """The path of epoch 1's checkpoint in ``folder``, once it exists, ``proc`` ended or ``timeout`` passed."""
    first = checkpoint.path_for(folder, 1)
    deadline = time.monotonic() + timeout
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return first
