"""The boundary around an opened model file: its framework opens and runs it in a child process
(:mod:`common.tools.sandbox_child`) with an address-space cap, a time limit, no network, and writes only in
a private temporary folder, so that a file that fools every check still cannot reach beyond that process.

One child serves a whole ``vgg predict`` (every batch), and the parent reads back only frames of JSON and
``.npy`` arrays. A child that fails, crashes, exceeds its cap or its time limit is one line naming the file."""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np

from common.core.config import MAX_CLASSES, MAX_IMAGE_SIZE, MAX_IN_CHANNELS
from common.serving import formats, signing
from common.tools import launch, sandbox_child as wire
from common.tools.models import Opened

#: the address-space cap of a model's process: room for any framework's own reservations and a large VGG
DEFAULT_MAX_MEMORY = 8 << 30
#: seconds a model's process may take to open the file, or to answer one batch
DEFAULT_TIME_LIMIT = 600.0
_META_LIMIT = 64 << 20


class SandboxError(formats.ModelFileError):
    """A model whose process failed, crashed, ran out of its cap or its time, or answered nonsense."""


def _child_env(threads: int | None) -> dict[str, str]:
    env = launch.safe_path_env(dict(os.environ))
    env["MALLOC_ARENA_MAX"] = "2"  # glibc reserves 64 MiB of address space per arena and thread otherwise
    env["VGG_CONFIG_DIR"] = str(signing.config_dir())  # the child's HOME is its private folder
    if threads:
        env["VGG_THREADS"] = env["OMP_NUM_THREADS"] = str(threads)
    return env


def _checked_meta(meta: object, path: Path) -> dict:
    """The child's description of the model, as untrusted data: the fields the parent uses, in range."""
    if isinstance(meta, dict):
        try:
            config, shape, classes = meta["config"], meta["input_shape"], meta["classes"]
            if (meta["layout"] in formats.LAYOUTS and isinstance(classes, list) and 0 < len(classes) <= MAX_CLASSES
                    and all(isinstance(c, str) for c in classes) and isinstance(shape, list) and len(shape) == 4
                    and type(config["image_size"]) is int and 0 < config["image_size"] <= MAX_IMAGE_SIZE
                    and type(config["in_channels"]) is int and 0 < config["in_channels"] <= MAX_IN_CHANNELS):
                return meta
        except (KeyError, TypeError):
            pass
    raise SandboxError(f"{path}: its process described the model in a form vgg does not read")


class Sandbox:
    """A model file opened in a confined child; call it with images (in ``meta['layout']``) for logits."""

    def __init__(self, path: str | Path, backend: str | None = None, trust_model: bool = False, device: str = "cpu",
                 max_memory: int | None = DEFAULT_MAX_MEMORY, time_limit: float = DEFAULT_TIME_LIMIT,
                 max_batch: int = 256, threads: int | None = None) -> None:
        self.path, self.time_limit, self.max_memory = Path(path), time_limit, max_memory
        if formats.kind(path)[0] == "native" and not trust_model:  # refused before any process starts
            signing.require_signed(path)
        self._folder = tempfile.mkdtemp(prefix="vgg-model-")
        to_child, self._inbox = os.pipe()
        self._outbox, from_child = os.pipe()
        request = {"model": str(path), "backend": backend,
                   "trust_model": trust_model, "device": device, "max_memory": max_memory if device == "cpu" else None,
                   "folder": self._folder, "inbox": to_child, "outbox": from_child,
                   "max_batch_bytes": max_batch * 3 * MAX_IMAGE_SIZE ** 2 * 4 + 4096}
        self._stderr = tempfile.TemporaryFile(dir=self._folder)
        self._proc = subprocess.Popen([sys.executable, "-m", "common.tools.sandbox_child", json.dumps(request)],
                                      env=_child_env(threads), cwd=self._folder, stdin=subprocess.DEVNULL,
                                      stdout=self._stderr, stderr=self._stderr, pass_fds=(to_child, from_child),
                                      start_new_session=True)
        os.close(to_child)
        os.close(from_child)
        self._closer = weakref.finalize(self, _stop, self._proc, self._inbox, self._outbox, self._folder,
                                         self._stderr)
        self.confinement = json.loads(self._expect(wire.READY, "starting", 1 << 16))
        self.meta = _checked_meta(json.loads(self._expect(wire.META, "opening it", _META_LIMIT)), self.path)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(images, np.float32), allow_pickle=False)
        try:
            wire.send(self._inbox, wire.BATCH, buffer.getvalue())
        except BrokenPipeError:
            self._fail("running it")
        payload = self._expect(wire.LOGITS, "running it", len(images) * MAX_CLASSES * 4 + 4096)
        try:
            logits = np.load(io.BytesIO(payload), allow_pickle=False)
        except ValueError:
            logits = None
        if logits is None or logits.dtype != np.float32 or logits.ndim != 2 or len(logits) != len(images):
            raise SandboxError(f"{self.path}: its process answered {len(images)} images with something other "
                               f"than one row of float32 logits each")
        return logits  # their count is checked against the class names by the caller, as for any model

    def close(self) -> None:
        """Stop the child and remove its folder (also done when the object is collected)."""
        self._closer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _expect(self, kind: bytes, stage: str, limit: int) -> bytes:
        """The payload of the next frame, which must be ``kind``; the child's error, death or silence as
        one SandboxError line."""
        deadline = time.monotonic() + self.time_limit

        def wait() -> None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._outbox], [], [], left)[0]:
                self.close()
                raise SandboxError(f"{self.path}: no answer within {self.time_limit:g} s while {stage}; its "
                                   "process was stopped (--time-limit sets the limit)")
        try:
            got, payload = wire.receive(self._outbox, limit, wait)
        except EOFError:
            self._fail(stage)
        except SandboxError:
            raise
        except ValueError as exc:
            self.close()
            raise SandboxError(f"{self.path}: its process sent {exc}") from None
        if got == wire.ERROR:
            self.close()
            text = formats.printable(payload.decode("utf-8", "replace"), 600)
            if "MemoryError" in text and self.max_memory:
                text += f"; its address space is capped at {self.max_memory / 2**30:g} GiB (--max-memory)"
            raise SandboxError(text if text.startswith(str(self.path)) else f"{self.path}: {text}")
        if got != kind:
            self._fail(stage)
        return payload

    def _fail(self, stage: str) -> None:
        """The child ended (or spoke out of turn) without saying why: its exit as one line."""
        try:
            status = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            status = None
        self._stderr.seek(0)
        last = [line for line in self._stderr.read().decode("utf-8", "replace").splitlines() if line.strip()]
        self.close()
        if status is not None and status < 0:
            how = f"was killed by {signal.Signals(-status).name}"
        else:
            how = f"ended with status {status}" if status is not None else "stopped answering"
        cap = f"; its address space is capped at {self.max_memory / 2**30:g} GiB (--max-memory)" \
            if self.max_memory else ""
        said = f" ({formats.printable(last[-1], 200)})" if last else ""
        raise SandboxError(f"{self.path}: its process {how} while {stage}{said}{cap}")


def _stop(proc: subprocess.Popen, inbox: int, outbox: int, folder: str, stderr) -> None:
    """Tell the child to quit, kill it if it does not, close the pipes and remove its folder."""
    try:
        wire.send(inbox, wire.QUIT)
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for fd in (inbox, outbox):
        try:
            os.close(fd)
        except OSError:
            pass
    stderr.close()
    shutil.rmtree(folder, ignore_errors=True)


def open_isolated(path: str | Path, backend: str | None = None,
                  trust_model: bool = False, device: str = "cpu", max_memory: int | None = DEFAULT_MAX_MEMORY,
                  time_limit: float = DEFAULT_TIME_LIMIT) -> Opened:
    """:func:`common.tools.models.open_model`, but opened and run in a confined child (see the module
    docstring); its ``forward`` is the :class:`Sandbox`, closed when the result is collected."""
    box = Sandbox(path, backend, trust_model, device, max_memory, time_limit)
    kind, _ = formats.kind(path)
    return Opened(Path(path), kind, box.meta, box)
