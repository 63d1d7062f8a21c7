"""The IDX format of (Fashion-)MNIST: big-endian magic, dimensions, then raw unsigned bytes.

Reading checks the magic number, the number of dimensions, the expected shape and the exact length, so a
truncated or wrong file fails with a message that names it instead of producing garbage arrays.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

UBYTE = 0x08  # the only element type Fashion-MNIST uses


class DataError(ValueError):
    """A data file is missing, corrupt, or not what it claims to be."""


def decode(raw: bytes, source: str, ndim: int | None = None, count: int | None = None) -> np.ndarray:
    """Parse IDX bytes into a uint8 array, checking magic, ``ndim``, the item ``count`` and the length."""
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise DataError(f"{source} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    if raw[2] != UBYTE:
        raise DataError(f"{source} holds IDX element type 0x{raw[2]:02x}; only unsigned bytes (0x08) are supported")
    dims = raw[3]
    if ndim is not None and dims != ndim:
        raise DataError(f"{source} has {dims} dimensions, expected {ndim}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{source} is truncated: {len(raw)} bytes, shorter than its {header}-byte header")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    if count is not None and shape[0] != count:
        raise DataError(f"{source} holds {shape[0]} items, expected {count}")
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) != header + size:
        state = "truncated" if len(raw) < header + size else "longer than its header says"
        raise DataError(f"{source} is {state}: {len(raw) - header} data bytes for shape {shape} ({size} expected)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_bytes(path: str | Path) -> bytes:
    """The uncompressed content of ``path`` (gzip if it starts with gzip's magic, raw otherwise)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        if not gz:
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as exc:  # gzip raises EOFError/BadGzipFile on damaged files
        raise DataError(f"cannot read {path}: {exc}") from None


def read(path: str | Path, ndim: int | None = None, count: int | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not."""
    return decode(read_bytes(path), str(path), ndim, count)


def encode(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array (what :func:`decode` reads back)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX encoding here is for uint8 arrays, got {array.dtype}")
    return bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX to ``path``, gzip-compressed when ``compress`` (default: path ends in .gz)."""
    path = Path(path)
    data = encode(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path
