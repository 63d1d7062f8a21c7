"""The four Fashion-MNIST files: where they are looked for, how they are verified, how they are downloaded.

Lookup order, per file: ``data_dir`` (argument / ``--data-dir``), ``$VGG_DATA_DIR``, the per-user cache
(``$XDG_CACHE_HOME/vgg-frameworks/fashion-mnist``, default ``~/.cache/...``), then Debian's
``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``. Each may hold the ``.gz`` or the raw
IDX file. Verification is by the SHA-256 of the *uncompressed* content (Debian rewrote the gzip headers,
so only that digest is the same everywhere), computed while reading and remembered per (path, size, mtime)
so later runs do not hash again.

A download trusts no network: HTTPS mirrors first, the compressed bytes capped at the known file size and
the whole file at a time limit, decompression streamed with a cap at the known IDX size, nothing accepted
after the gzip member, a unique temporary file renamed into place only once its SHA-256 matches, and a lock
so that concurrent processes (the workers of a first multi-worker run) share one download. A folder the
user names (``data_dir``, ``$VGG_DATA_DIR``) must exist: a misspelling is an error, never a new folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm.auto import tqdm

from common.core import atomic
from common.data import idx
from common.data.idx import DataError

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
ENV_VAR = "VGG_DATA_DIR"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = (f"install Debian's copy with 'sudo apt-get install dataset-fashion-mnist', or put the four "
                f"files in a folder and pass --data-dir (data_dir=) or set {ENV_VAR}")

# name -> (SHA-256 of the uncompressed IDX content, dimensions, item count)
FILES = {
    "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 3, 60000),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 1, 60000),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 3, 10000),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 1, 10000),
}
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# name -> (bytes of the official .gz, bytes of its IDX content): a download is cut off past the first, its
# decompression past the second
SIZES = {
    "train-images-idx3-ubyte": (26_421_880, 47_040_016),
    "train-labels-idx1-ubyte": (29_515, 60_008),
    "t10k-images-idx3-ubyte": (4_422_102, 7_840_016),
    "t10k-labels-idx1-ubyte": (5_148, 10_008),
}
# Tried in order (like torchvision's ``mirrors``; assign your own tuple, or pass ``mirrors=`` to download).
# Integrity is the pinned SHA-256, not the transport, so Zalando's plain-HTTP bucket stays last: where HTTPS
# is blocked or intercepted it still works, and a tampering network can only make the download fail.
MIRRORS = ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
           "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
           "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")
TIMEOUT = 30  # seconds a connection or one read may wait
TIME_LIMIT = 600  # seconds one file's download may take in all (the largest, 26 MB, at 44 kB/s)
CHUNK = 1 << 16  # bytes read, or inflated, at a time
LOCK = ".download.lock"  # in the download folder while a download runs


def cache_dir() -> Path:
    """The per-user cache folder for downloads and the record of verified files."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vgg-frameworks"


def search_dirs(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """The folders looked in, in order, each with how it was chosen (for error messages)."""
    places = []
    if data_dir is not None:
        places.append(("data_dir", Path(data_dir)))
    if os.environ.get(ENV_VAR):
        places.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR])))
    places += [("user cache", cache_dir() / "fashion-mnist"), ("system copy", SYSTEM_DIR)]
    return places


def data_folder(value: str | Path, what: str = "data_dir") -> Path:
    """``value`` as a Path if it is an existing folder; refused in one line otherwise, so a misspelled
    folder is never ignored nor created to download into."""
    path = Path(value)
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise DataError(f"{what} {str(value)!r} {state}; it must name an existing folder (one holding the four "
                        f"Fashion-MNIST files, or one to download them into)")
    return path


def check_named_folders(data_dir: str | Path | None = None) -> None:
    """Refuse a ``data_dir`` or ``$VGG_DATA_DIR`` that names no existing folder."""
    if data_dir is not None:
        data_folder(data_dir)
    if os.environ.get(ENV_VAR):
        data_folder(os.environ[ENV_VAR], f"${ENV_VAR}")


def _in(folder: Path, name: str) -> Path | None:
    """``folder``'s ``name.gz`` or ``name``, whichever exists first, or None."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def find(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The first existing ``name.gz`` or ``name`` in :func:`search_dirs`, or None."""
    for _, folder in search_dirs(data_dir):
        if found := _in(folder, name):
            return found
    return None


class _Verified:
    """Digests already computed, keyed by resolved path, size and mtime (a changed file is hashed again)."""

    def __init__(self) -> None:
        self.path = cache_dir() / "verified.json"
        try:
            self.known = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}

    @staticmethod
    def _key(path: Path) -> tuple[str, str]:
        st = path.stat()
        return str(path.resolve()), f"{st.st_size}:{st.st_mtime_ns}"

    def get(self, path: Path) -> str | None:
        name, stamp = self._key(path)
        entry = self.known.get(name)
        return entry["sha256"] if entry and entry.get("stamp") == stamp else None

    def put(self, path: Path, digest: str) -> None:
        name, stamp = self._key(path)
        self.known[name] = {"stamp": stamp, "sha256": digest}
        try:
            atomic.write_text(self.path, json.dumps(self.known, indent=1))
        except OSError:
            pass  # a read-only home only costs a re-hash next time


def read_verified(path: Path, name: str, verify: bool = True) -> np.ndarray:
    """Read ``path`` (the file ``name``), check its uncompressed SHA-256 (cached) and its IDX structure."""
    expected, ndim, count = FILES[name]
    raw = idx.read_bytes(path)
    if verify:
        record = _Verified()
        if record.get(path) != expected:
            actual = hashlib.sha256(raw).hexdigest()
            if actual != expected:
                raise DataError(
                    f"{path} is not the Fashion-MNIST file {name}: SHA-256 of its uncompressed content is "
                    f"{actual}, expected {expected}; delete or replace it ({INSTALL_HINT})")
            record.put(path, actual)
    return idx.decode(raw, str(path), ndim, count if verify else None)


class _Gunzip:
    """Streaming gunzip that hashes what it inflates, refusing more than ``limit`` bytes of output (a gzip
    bomb is stopped after ``limit``, never held in memory) and any byte after the gzip member."""

    def __init__(self, limit: int) -> None:
        self.inflate, self.digest = zlib.decompressobj(16 + zlib.MAX_WBITS), hashlib.sha256()
        self.limit, self.size = limit, 0

    def feed(self, data: bytes) -> None:
        """Inflate ``data``, at most :data:`CHUNK` bytes of output at a time."""
        while data:
            if self.inflate.eof:
                raise DataError("bytes follow the end of the gzip stream")
            out = self.inflate.decompress(data, min(CHUNK, self.limit - self.size + 1))
            self.size += len(out)
            if self.size > self.limit:
                raise DataError(f"it inflates to more than the {self.limit} bytes expected")
            self.digest.update(out)
            data = self.inflate.unconsumed_tail
        if self.inflate.unused_data:
            raise DataError("bytes follow the end of the gzip stream")

    def sha256(self) -> str:
        """The digest of the whole inflated content; refused if the gzip stream did not end."""
        if not self.inflate.eof:
            raise DataError("the gzip stream is truncated")
        return self.digest.hexdigest()


def _fetch(url: str, out: BinaryIO, name: str, time_limit: float) -> str:
    """Stream ``url`` into ``out`` (progress bar) within ``name``'s known sizes and ``time_limit`` seconds;
    return the SHA-256 of its gunzipped content."""
    size, inflated = SIZES[name]
    gunzip, received = _Gunzip(inflated), 0
    deadline = time.monotonic() + time_limit
    with urllib.request.urlopen(url, timeout=min(TIMEOUT, time_limit)) as response, \
            tqdm(total=size, unit="B", unit_scale=True, desc=f"downloading {name}.gz", leave=False) as bar:
        announced = response.headers.get("Content-Length", "")
        if announced.isdigit() and int(announced) > size:
            raise DataError(f"it announces {announced} bytes, more than the {size} bytes of {name}.gz")
        while chunk := response.read1(min(CHUNK, size + 1 - received)):  # read1: one wait, not a full chunk
            received += len(chunk)
            if received > size:
                raise DataError(f"it sent more than the {size} bytes of {name}.gz (cut off)")
            if time.monotonic() > deadline:
                raise DataError(f"it took more than {time_limit:g} s (cut off)")
            out.write(chunk)
            gunzip.feed(chunk)
            bar.update(len(chunk))
    return gunzip.sha256()


def _fetch_verified(url: str, name: str, folder: Path, time_limit: float) -> Path:
    """One mirror's try: into a unique temporary file in ``folder``, renamed to ``name.gz`` only if it verifies."""
    expected = FILES[name][0]

    def fetch_into(tmp: str) -> None:
        with open(tmp, "wb") as out:
            actual = _fetch(url, out, name, time_limit)
        if actual != expected:
            raise DataError(f"wrong content (SHA-256 {actual}, expected {expected})")

    path = atomic.write_with(folder / f"{name}.gz", fetch_into, suffix=".download")
    _Verified().put(path, expected)
    return path


def _lock(path: Path) -> BinaryIO:
    """``path`` opened and exclusively locked, once it is still the file at ``path`` (the holder before may
    have removed it while this process waited: then lock the new one)."""
    while True:
        try:
            lock = open(path, "ab")
        except OSError as exc:
            raise DataError(f"cannot download into {path.parent} ({exc.strerror or exc})") from None
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes, or the process ends
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(lock.fileno()), os.stat(path)):
                return lock
        lock.close()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s download lock: one process downloads, the others wait, then find its file."""
    lock = _lock(folder / LOCK)
    try:
        yield
    finally:  # removed while still held, so no lock file is left in a folder the user named
        (folder / LOCK).unlink(missing_ok=True)
        lock.close()


def download(name: str, folder: Path, mirrors: Sequence[str] | None = None, *,
             time_limit: float | None = None) -> Path:
    """``folder``'s ``name.gz``, fetched from the first of ``mirrors`` (default :data:`MIRRORS`) that
    serves the verified file within ``time_limit`` seconds (default :data:`TIME_LIMIT`), unless another
    process already did while this one waited for the lock."""
    time_limit = TIME_LIMIT if time_limit is None else time_limit
    with _locked(folder):
        if present := _in(folder, name):
            return present
        failures = []
        for base in MIRRORS if mirrors is None else mirrors:
            url = f"{base}{name}.gz"
            try:
                return _fetch_verified(url, name, folder, time_limit)
            except (urllib.error.URLError, http.client.HTTPException, OSError, zlib.error, DataError) as exc:
                failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
    raise DataError(f"could not download {name}.gz (" + "; ".join(failures) + ")")


def locate(name: str, data_dir: str | Path | None = None, download_missing: bool = True) -> Path:
    """Where ``name`` is, downloading it into the folder named (or the user cache) if it is nowhere."""
    check_named_folders(data_dir)
    found = find(name, data_dir)
    if found is not None:
        return found
    searched = ", ".join(f"{label} {folder}" for label, folder in search_dirs(data_dir))
    if not download_missing:
        raise DataError(f"Fashion-MNIST file {name}(.gz) not found in {searched}; {INSTALL_HINT}")
    if data_dir is not None or os.environ.get(ENV_VAR):
        target = search_dirs(data_dir)[0][1]
    else:
        target = cache_dir() / "fashion-mnist"
        with contextlib.suppress(OSError):  # ours to create, unlike a folder the user names; if it cannot
            target.mkdir(parents=True, exist_ok=True)  # be, the download says so
    try:
        return download(name, target)
    except DataError as exc:
        raise DataError(f"Fashion-MNIST file {name}(.gz) not found in {searched}, and {exc}; "
                        f"{INSTALL_HINT}") from None


def load_split(split: str, data_dir: str | Path | None = None, *, download: bool = True,
               verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and labels (N,) of ``split`` ("train" or "test")."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    images_name, labels_name = SPLITS[split]
    images = read_verified(locate(images_name, data_dir, download), images_name, verify)
    labels = read_verified(locate(labels_name, data_dir, download), labels_name, verify)
    if len(images) != len(labels):
        raise DataError(f"the {split} split has {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"the {split} labels go up to {labels.max()}; Fashion-MNIST has {len(CLASSES)} classes")
    return images, labels


def load_arrays(data_dir: str | Path | None = None, *, download: bool = True,
                verify: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images, train labels, test images, test labels as uint8 arrays."""
    return (*load_split("train", data_dir, download=download, verify=verify),
            *load_split("test", data_dir, download=download, verify=verify))
