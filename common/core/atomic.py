"""Atomic file writes: a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def _create(path: Path, suffix: str) -> str:
    """A new empty file beside ``path`` with a random name, created with mode 0o666 less the umask, as
    ``open`` creates files (``mkstemp``'s 0o600 would make every atomically written file private)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # O_EXCL: never another's file
    return str(tmp)


def write_with(path: str | os.PathLike, writer: Callable[[str], object], suffix: str = ".tmp") -> Path:
    """Let ``writer(tmp_path)`` write a temporary file next to ``path`` (for libraries that only save to a
    path), then fsync it, rename it over ``path`` and fsync the folder, so the rename itself is durable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create(path, suffix)
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_bytes(path: str | os.PathLike, data: bytes | bytearray) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_bytes` for UTF-8 text."""
    return write_bytes(path, text.encode("utf-8"))


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move a finished file or folder ``tmp`` (on the same file system) to ``path``. A file replaces the old
    one in one rename; a folder is renamed into place first and the old one removed after, so ``path``
    never holds half of anything."""
    tmp, path = Path(tmp), Path(path)
    old = None
    if tmp.is_dir() and (path.exists() or path.is_symlink()):
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    return path
