"""The four Fashion-MNIST files: where they are looked for, how they are verified, how they are downloaded.

Lookup order, per file: ``data_dir`` (argument / ``--data-dir``), ``$VGG_DATA_DIR``, the per-user cache
(``$XDG_CACHE_HOME/vgg-frameworks/fashion-mnist``, default ``~/.cache/...``), then Debian's
``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``. Each may hold the ``.gz`` or the raw
IDX file. Verification is by the SHA-256 of the *uncompressed* content (Debian rewrote the gzip headers,
so only that digest is the same everywhere), computed while reading and remembered per (path, size, mtime)
so later runs do not hash again.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

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
MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
           "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")
TIMEOUT = 30  # seconds per connection attempt


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


def find(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The first existing ``name.gz`` or ``name`` in :func:`search_dirs`, or None."""
    for _, folder in search_dirs(data_dir):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
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


def _fetch(url: str, tmp: Path) -> str:
    """Stream ``url`` into ``tmp`` (progress bar) and return the SHA-256 of its gunzipped content."""
    inflate, digest = zlib.decompressobj(16 + zlib.MAX_WBITS), hashlib.sha256()
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(tmp, "wb") as out, \
            tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                 desc=f"downloading {url.rsplit('/', 1)[-1]}", leave=False) as bar:
        while chunk := response.read(1 << 20):
            out.write(chunk)
            digest.update(inflate.decompress(chunk))
            bar.update(len(chunk))
        digest.update(inflate.flush())
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def download(name: str, folder: Path) -> Path:
    """Fetch ``name.gz`` into ``folder``: temporary file, verify, rename; try each mirror in turn."""
    failures = []
    expected = FILES[name][0]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.gz"
    for base in MIRRORS:
        url = f"{base}{name}.gz"
        tmp = folder / f".{name}.gz.download"
        try:
            actual = _fetch(url, tmp)
            if actual != expected:
                failures.append(f"{url}: wrong content (SHA-256 {actual}, expected {expected})")
                continue
            os.replace(tmp, path)
        except (urllib.error.URLError, OSError, zlib.error) as exc:
            failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
            continue
        finally:
            tmp.unlink(missing_ok=True)
        _Verified().put(path, actual)
        return path
    raise DataError(f"could not download {name}.gz (" + "; ".join(failures) + ")")


def locate(name: str, data_dir: str | Path | None = None, download_missing: bool = True) -> Path:
    """Where ``name`` is, downloading it into the first writable place if it is nowhere."""
    found = find(name, data_dir)
    if found is not None:
        return found
    searched = ", ".join(f"{label} {folder}" for label, folder in search_dirs(data_dir))
    if not download_missing:
        raise DataError(f"Fashion-MNIST file {name}(.gz) not found in {searched}; {INSTALL_HINT}")
    target = search_dirs(data_dir)[0][1] if data_dir is not None or os.environ.get(ENV_VAR) \
        else cache_dir() / "fashion-mnist"
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
