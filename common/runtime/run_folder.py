"""A run's folder: one run at a time (a lock held for the run's lifetime), and what an earlier run left there."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

#: the lock file in a run's folder; it holds the pid of the run that last took it
LOCK = ".lock"


class FolderInUse(OSError):
    """Another live run holds this folder."""


@contextlib.contextmanager
def locked(folder: str | Path, label: str) -> Iterator[Path]:
    """Hold ``folder``'s lock for the ``with`` block or fail at once naming the holder's pid: two runs in one
    folder replace each other's files and delete each other's checkpoints. The lock is ``flock``'s, so the
    system releases it when the process ends, however it ends; ``label`` names the folder in the message."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderInUse(f"{label} is in use by another run (pid {holder}); wait for it to end or choose "
                              "another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def earlier(folder: str | Path, patterns: Iterable[str]) -> list[Path]:
    """What an earlier run left in ``folder``: the entries matching any of the glob ``patterns``, sorted."""
    folder = Path(folder)
    return sorted({p for pattern in patterns for p in folder.glob(pattern)})


def remove(paths: Iterable[Path]) -> None:
    """Delete files and folders (an earlier run's, when the user asked to overwrite it)."""
    for path in paths:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
