"""One launcher for W worker processes on this machine, for the frameworks that ship none that works here
(TensorFlow, JAX, MXNet, whose ``tools/launch.py`` fails on Python >= 3.9); PyTorch's workers are started
by ``torchrun``, which this module runs and watches the same way.

It picks free loopback ports, sets each framework's own environment (common.runtime.distributed's
``worker_environments``) and starts MXNet's scheduler and server, streams every
worker's output prefixed with its rank, and when one worker fails stops the others and says which one died.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from common.runtime import distributed
from common.runtime.distributed import DistributedError

ROOT = Path(__file__).resolve().parents[2]
HOST = distributed.HOST
GRACE_S = 10  # after a failure: SIGTERM, this long to exit, then SIGKILL
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_port(port: int) -> int:
    """``port`` if it can be bound on the loopback interface, else a one-line DistributedError."""
    if not 0 < port < 65536:
        raise DistributedError(f"--port {port} is not allowed: it must be between 1 and 65535")
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise DistributedError(f"--port {port} on {HOST} is not free ({exc.strerror}); pass another --port "
                                   "or leave it out to pick a free one") from None
    return port


def _die_with_parent() -> None:
    """In a child, before exec: get SIGKILL when the launcher dies, so no worker outlives it (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def die_with_parent() -> None:
    """For a worker started by torchrun under this launcher: the same orphan guard, set from inside."""
    if os.environ.get("VGG_LAUNCHED") == "1":
        _die_with_parent()


def base_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PORT"}  # ps-lite reads PORT as its own port
    env.update(VGG_LAUNCHED="1", VGG_THREADS=str(threads), OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1",
               TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(proxy, None)  # gRPC (TF) and JAX's coordinator would send loopback traffic to a proxy
    return env


@dataclass
class _Child:
    label: str
    proc: subprocess.Popen
    rank: int | None  # None for MXNet's scheduler and server
    pumps: list[threading.Thread] = field(default_factory=list)


_TORCHRUN_LINE = re.compile(r"^\[default(\d+)\]:(.*)$", re.S)


def _pump(stream: IO[bytes], out: IO[str], prefix: str, torchrun: list[str] | None) -> None:
    """Copy ``stream`` to ``out`` line by line (``\\r`` ends a line too, for progress bars), with ``prefix``.
    For torchrun, worker lines ``[defaultN]:...`` become ``[rank N] ...``; its own lines are kept aside."""
    pending = b""
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            break
        pending += chunk
        parts = re.split(rb"(\r\n|\n|\r)", pending)
        pending = parts.pop()
        for text, end in zip(parts[::2], parts[1::2]):
            line = text.decode("utf-8", "replace")
            if torchrun is not None:
                m = _TORCHRUN_LINE.match(line)
                if not m:
                    torchrun.append(line)
                    continue
                line = f"[rank {m.group(1)}] {m.group(2)}"
            else:
                line = prefix + line
            out.write(line + end.decode())
            out.flush()
    if pending:
        out.write(prefix + pending.decode("utf-8", "replace") + "\n")
        out.flush()


def _start(cmd: list[str], env: dict[str, str], label: str, rank: int | None,
           torchrun: list[str] | None = None) -> _Child:
    proc = subprocess.Popen(cmd, env=env, cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
    child = _Child(label, proc, rank)
    for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
        t = threading.Thread(target=_pump, args=(stream, out, f"[{label}] ", torchrun), daemon=True)
        t.start()
        child.pumps.append(t)
    return child


def _stop(children: list[_Child]) -> None:
    """SIGTERM every child still running (torchrun passes it on to its workers), then SIGKILL stragglers."""
    alive = [c for c in children if c.proc.poll() is None]
    for c in alive:
        try:
            c.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + GRACE_S
    for c in alive:
        try:
            c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(c.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            c.proc.wait()
    for c in children:
        for t in c.pumps:
            t.join(timeout=2)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _torchrun_failure(lines: list[str]) -> str | None:
    """'rank R ... exitcode' of torchrun's root-cause report, as one phrase."""
    text = "\n".join(lines)
    cause = text.split("Root Cause", 1)[-1]
    rank = re.search(r"rank\s*:\s*(\d+)", cause)
    code = re.search(r"exitcode\s*:\s*(-?\d+)", cause)
    pid = re.search(r"pid:\s*(\d+)", cause)
    if not (rank and code):
        return None
    return f"worker rank {rank.group(1)}{f' (pid {pid.group(1)})' if pid else ''} {describe_exit(int(code.group(1)))}"


def launch(backend: str, module: str, args: list[str], workers: int, *, threads: int, port: int | None = None,
           prog: str = "vgg") -> int:
    """Run ``python -m module args`` in ``workers`` processes on this machine with ``backend``'s engine;
    return 0 when all succeed, else the failed worker's status (1 for a signal), 130 on Ctrl-C."""
    port = check_port(port) if port else free_port()
    children: list[_Child] = []
    torchrun: list[str] | None = None
    python = [sys.executable, "-m"]
    if backend == "torch":
        torchrun = []
        cmd = python + ["torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(workers),
                        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{HOST}:{port}", "--max-restarts", "0",
                        "--tee", "3", "-m", module, *args]
        children.append(_start(cmd, base_env(threads), "torchrun", None, torchrun))
    else:
        envs = distributed.worker_environments(backend, base_env(threads), workers, threads, port, free_port)
        if backend == "mxnet":
            node = python + ["vgg_mxnet.framework"]  # importing MXNet with a non-worker role runs that node
            for role in ("scheduler", "server"):
                env = {**distributed.mxnet_environment(base_env(1), workers, port), "DMLC_ROLE": role}
                children.append(_start(node, env, f"mxnet {role}", None))
        for rank, env in enumerate(envs):
            children.append(_start(python + [module, *args], {**env, "VGG_LAUNCH_RANK": str(rank)},
                                   f"rank {rank}", rank))
    watched = [c for c in children if c.rank is not None or backend == "torch"]
    try:
        while True:
            failed = [c for c in children if c.proc.poll() not in (None, 0)]
            if failed:  # several at once: the one a signal ended is the cause, the others followed it
                failed = min(failed, key=lambda c: (c.proc.returncode >= 0, c.rank or 0))
                break
            if all(c.proc.poll() == 0 for c in watched):
                _finish(children)
                return 0
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(children)
        print(f"{prog}: interrupted; stopped all {workers} workers", file=sys.stderr)
        return 130
    code = failed.proc.returncode
    _stop(children)
    if torchrun is not None:
        what = _torchrun_failure(torchrun) or f"torchrun {describe_exit(code)}"
    else:
        what = f"worker {failed.label} (pid {failed.proc.pid}) {describe_exit(code)}"
    print(f"{prog}: error: {what}; stopped the other workers", file=sys.stderr)
    return code if code > 0 else 1


def _finish(children: list[_Child]) -> None:
    """After the workers succeeded: MXNet's scheduler and server end by themselves; wait, then stop them."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(c.proc.poll() is None for c in children):
        time.sleep(0.1)
    _stop(children)
