"""Trust by provenance for program-like model files (``.pt2``, SavedModel, ``.jax_export``, ``.mxnet``), as
``jupyter trust`` trusts notebooks: ``vgg export`` signs what it writes, ``vgg trust FILE`` signs a file the
user has decided to trust, and a native export loads only when signed by this user (or ``--trust-model``).

A signature is an HMAC-SHA256 of the file's bytes (a folder's: every file's relative path and bytes) under a
key made once per user; it is kept in the user's config folder, never in the file, so a file cannot carry
its own. ``$VGG_CONFIG_DIR`` moves that folder (default ``$XDG_CONFIG_HOME/vgg-frameworks``)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Literal, overload

from common.core import atomic
from common.serving import formats

KEY_FILE = "signing.key"
SIGNATURES = "signatures"
_CHUNK = 1 << 20


def config_dir() -> Path:
    """The user's vgg-frameworks config folder: ``$VGG_CONFIG_DIR``, else ``$XDG_CONFIG_HOME`` or
    ``~/.config``, then ``vgg-frameworks``."""
    if os.environ.get("VGG_CONFIG_DIR"):
        return Path(os.environ["VGG_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "vgg-frameworks"


@overload
def _key(create: Literal[True]) -> bytes: ...
@overload
def _key(create: bool) -> bytes | None: ...


def _key(create: bool) -> bytes | None:
    """The user's signing key (32 random bytes, mode 0600), made on first use when ``create``: written whole
    under a temporary name and linked into place, so a process that starts at the same moment reads the
    winner's key, never an empty file."""
    path = config_dir() / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{KEY_FILE}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another process put its key there first: then that one is the key
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def _files(path: Path) -> list[tuple[str, Path]]:
    """``(relative name, path)`` of every file a model path holds, sorted; a link, device or other special
    file anywhere makes it unsignable (what it points to could change under the signature)."""
    mode = path.lstat().st_mode
    if stat.S_ISREG(mode):
        return [("", path)]
    if not stat.S_ISDIR(mode):
        raise formats.ModelFileError(f"{path}: neither a file nor a folder, so it cannot be signed")
    found = []
    for item in sorted(path.rglob("*")):
        mode = item.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise formats.ModelFileError(f"{path}: {formats.printable(item.relative_to(path))} is a link or "
                                         "special file, which a model file never holds")
        found.append((item.relative_to(path).as_posix(), item))
    return found


def digest(path: str | Path, key: bytes) -> str:
    """The HMAC-SHA256 (hex) of a model file or folder under ``key``."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for name, item in _files(Path(path)):
        encoded = name.encode("utf-8", "surrogateescape")
        mac.update(len(encoded).to_bytes(8, "little") + encoded + item.stat().st_size.to_bytes(8, "little"))
        with open(item, "rb") as f:
            while chunk := f.read(_CHUNK):
                mac.update(chunk)
    return mac.hexdigest()


def sign(path: str | Path) -> str:
    """Record ``path``'s current bytes as trusted by this user; returns the signature."""
    signature = digest(path, _key(create=True))
    folder = config_dir() / SIGNATURES
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic.write_text(folder / signature, f"{Path(path).resolve()}\n")
    return signature


def is_signed(path: str | Path) -> bool:
    """Whether ``path``'s bytes, as they are now, were signed by this user."""
    key = _key(create=False)
    if key is None:
        return False
    try:
        signature = digest(path, key)
    except (formats.ModelFileError, OSError):
        return False
    return (config_dir() / SIGNATURES / signature).is_file()


def require_signed(path: str | Path) -> None:
    """Refuse (ModelFileError, one line) a program-like model file this user has not signed, saying how to
    proceed."""
    if not is_signed(path):
        raise formats.ModelFileError(
            f"{path}: not loaded: a native export is a program, and this one was not written by vgg export "
            f"here nor trusted with vgg trust; if you trust its source, run `vgg trust {path}` (or pass "
            "--trust-model once), or export again from the safetensors weights, which are data")
