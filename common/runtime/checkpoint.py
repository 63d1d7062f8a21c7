"""Crash-safe checkpoints: one file per epoch, arrays in safetensors, a SHA-256 trailer, atomic writes.

A checkpoint is written to a temporary file, fsynced and renamed, so a process killed at any moment
leaves either the previous checkpoints or the new complete one. Reading checks the magic, the trailer
digest and the framing, so a truncated or altered file is refused rather than half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load, save as st_save

from common.core import atomic
from common.runtime.history import FIELDS

MAGIC = b"VGGCKPT1"
_NAME = re.compile(r"^epoch-(\d+)\.ckpt$")


class CheckpointError(ValueError):
    """A checkpoint that is truncated, corrupt, or does not belong to this run."""


def path_for(folder: str | Path, epoch: int) -> Path:
    return Path(folder) / f"epoch-{epoch:03d}.ckpt"


def write(folder: str | Path, epoch: int, arrays: dict[str, np.ndarray], meta: dict, keep: int = 2) -> Path:
    """Write the checkpoint of a finished ``epoch`` and delete all but the newest ``keep``."""
    payload = st_save({k: np.require(v, requirements="C") for k, v in arrays.items()},  # keeps 0-d
                      metadata={"meta": json.dumps(meta)})
    path = atomic.write_bytes(path_for(folder, epoch), MAGIC + payload + hashlib.sha256(payload).digest())
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Return ``(arrays, meta)`` of a checkpoint, or raise CheckpointError saying what is wrong."""
    path = Path(path)
    blob = path.read_bytes()
    advice = f"delete {path} to resume from the checkpoint before it, or start again with --overwrite"
    if len(blob) < len(MAGIC) + 32 or not blob.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a vgg-frameworks checkpoint (bad header or truncated); {advice}")
    payload, digest = blob[len(MAGIC):-32], blob[-32:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path} is truncated or corrupt (SHA-256 mismatch); {advice}")
    try:
        arrays = st_load(payload)
        header_len = int.from_bytes(payload[:8], "little")
        meta = json.loads(json.loads(payload[8:8 + header_len])["__metadata__"]["meta"])
    except Exception as exc:  # the digest matched, so this is a file written by something else
        raise CheckpointError(f"{path} cannot be decoded ({exc}); {advice}") from None
    return arrays, meta


def check_meta(path: str | Path, meta: object, epochs: int) -> None:
    """Refuse the meta of a checkpoint unless every field a resume reads has its type and range: ``run`` and
    ``recipe`` objects, ``epoch`` an integer from 1 to the run's ``epochs``, and ``history`` that many rows of
    finite numbers numbered from 1. The digest only proves the file whole: a forged meta would otherwise
    crash the resume, or end it with nothing trained and the run's model and record written anyway."""
    problem = _meta_problem(meta, epochs)
    if problem:
        raise CheckpointError(f"{path} cannot be resumed: its meta {problem}; delete it to resume from the "
                              "checkpoint before it, or start again with --overwrite")


def _meta_problem(meta: object, epochs: int) -> str | None:
    """What is wrong in a checkpoint's ``meta`` for a run of ``epochs`` epochs (None if nothing)."""
    if not isinstance(meta, dict):
        return "is not an object"
    missing = [key for key in ("epoch", "run", "recipe", "history") if key not in meta]
    if missing:
        return f"has no {', '.join(missing)}"
    if not isinstance(meta["run"], dict) or not isinstance(meta["recipe"], dict):
        return "has a run or recipe that is not an object"
    epoch = meta["epoch"]
    if not _is_int(epoch) or not 1 <= epoch <= epochs:
        return f"says epoch {repr(epoch)[:40]}, not an integer from 1 to this run's {epochs} epochs"
    if not _is_history(meta["history"], epoch):
        return f"has a history that is not {epoch} rows of finite {', '.join(FIELDS)} for epochs 1 to {epoch}"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_history(rows: object, epoch: int) -> bool:
    """Whether ``rows`` are the History rows of epochs 1 to ``epoch``: the History fields and no others (its
    CSV refuses others), each a finite number."""
    return isinstance(rows, list) and len(rows) == epoch and all(
        isinstance(row, dict) and set(row) == set(FIELDS) and all(map(_is_number, row.values()))
        and row["epoch"] == i + 1 for i, row in enumerate(rows))


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Finished checkpoints in ``folder``, oldest first (temporary files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(folder: str | Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None
