"""The child process of :mod:`common.tools.sandbox`: it confines itself first (own network namespace, a
private working folder it alone may write to, an address-space cap), then opens one model file and answers
batches of images with logits until told to stop.

Messages on the two pipes are frames: a kind byte, an 8-byte length, then JSON or a ``.npy`` array; never a
pickle, since the parent must read what a possibly hostile model's process sends as data only. This module
imports only the standard library at the top: ``unshare`` needs the process still single-threaded."""

from __future__ import annotations

import json
import os
import struct
import sys

from common.runtime import confine

READY, META, LOGITS, ERROR, BATCH, QUIT = b"R", b"M", b"L", b"E", b"B", b"Q"
_HEADER = struct.Struct("<cQ")


def send(fd: int, kind: bytes, payload: bytes = b"") -> None:
    """Write one frame to ``fd``."""
    data = memoryview(_HEADER.pack(kind, len(payload)) + payload)
    while data:
        data = data[os.write(fd, data):]


def read_exact(fd: int, count: int, wait=None) -> bytes:
    """``count`` bytes from ``fd`` (``wait()`` before each read, to enforce a deadline); EOFError if the
    other end closed first."""
    chunks, left = [], count
    while left:
        if wait:
            wait()
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd: int, limit: int, wait=None) -> tuple[bytes, bytes]:
    """``(kind, payload)`` of the next frame on ``fd``; ValueError for a frame longer than ``limit``."""
    kind, size = _HEADER.unpack(read_exact(fd, _HEADER.size, wait))
    if size > limit:
        raise ValueError(f"a {kind!r} message of {size} bytes, more than the {limit} allowed")
    return kind, read_exact(fd, size, wait)


def _confine(request: dict) -> list[str]:
    """Apply every confinement the kernel offers, in the order they need; what applied, for the parent."""
    problem = confine.own_network()
    applied = ["own network namespace, no interface up" if problem is None else f"network not confined: {problem}"]
    folder = request["folder"]
    os.chdir(folder)
    for name in ("HOME", "TMPDIR", "XDG_CACHE_HOME"):
        os.environ[name] = folder
    devices = tuple(f"/dev/{name}" for name in sorted(os.listdir("/dev")) if name.startswith("nvidia")) \
        if request["device"] == "gpu" else ()
    applied += confine.landlock(folder, ("/dev/null", *devices)) or ["no Landlock: writes are not confined"]
    if request["max_memory"]:
        confine.limit_memory(request["max_memory"])
        applied.append(f"address space <= {request['max_memory']} bytes")
    return applied


def _message(exc: BaseException) -> str:
    """One line for an error in the child: ours (a ValueError naming the file) as it is, a framework's (and
    running out of the cap) as its first line."""
    from common.serving import formats
    if isinstance(exc, ValueError) and not type(exc).__module__.startswith(("builtins", "numpy")):
        return formats.printable(str(exc), 600)
    return formats.first_line(exc)


def serve(request: dict, inbox: int, outbox: int) -> int:
    """Open the model the request names and answer batches on ``inbox`` with logits on ``outbox``."""
    send(outbox, READY, json.dumps(_confine(request)).encode())
    try:
        import io

        import numpy as np

        from common.tools import models

        opened = models.open_model(request["model"], request["backend"], trust_model=request["trust_model"],
                                   device=request["device"])
        send(outbox, META, json.dumps(opened.meta).encode())
        while True:
            kind, payload = receive(inbox, request["max_batch_bytes"])
            if kind != BATCH:
                return 0
            images = np.load(io.BytesIO(payload), allow_pickle=False)
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(opened.forward(images), np.float32), allow_pickle=False)
            send(outbox, LOGITS, buffer.getvalue())
    except BaseException as exc:  # everything the model file or its framework raises becomes one line
        send(outbox, ERROR, _message(exc).encode())
        return 1


def main() -> int:
    request = json.loads(sys.argv[1])
    return serve(request, request["inbox"], request["outbox"])


if __name__ == "__main__":
    sys.exit(main())
