"""One launcher for W worker processes on this machine, for all four frameworks: TensorFlow, JAX and MXNet
ship none that works here (MXNet's ``tools/launch.py`` fails on Python >= 3.9), and ``torchrun``'s
rendezvous store listens on every network interface, so torch workers meet through a file store instead.

It picks free loopback ports, sets each framework's own environment (common.runtime.distributed's
``worker_environments``) and starts MXNet's scheduler and server, streams every worker's output prefixed
with its rank, and stops the job when one worker fails (naming it) or when no worker has made progress for
``stall_timeout`` seconds (naming the silent ranks). Children never import from the working folder, and
where the kernel allows it they share a network namespace of their own that holds only loopback, so that
no listener of the job (TensorFlow's bind every interface) can be reached from outside.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from common.runtime import distributed
from common.runtime.distributed import DistributedError
from common.runtime.nodes import Nodes

ROOT = Path(__file__).resolve().parents[2]
HOST = distributed.HOST
GRACE_S = 10  # after a failure: SIGTERM, this long to exit, then SIGKILL
#: seconds without output or a training step from any worker before the job counts as hung (--stall-timeout)
STALL_TIMEOUT_S = 600.0
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_port(port: int, backend: str) -> int:
    """``port`` if ``backend``'s coordinator can bind it on the loopback interface, else a one-line
    DistributedError."""
    if backend == "torch":
        raise DistributedError(f"--port {port} is not used by torch: its workers on one machine meet through a "
                               "file store, not a port; leave --port out")
    if not 0 < port < 65536:
        raise DistributedError(f"--port {port} is not allowed: it must be between 1 and 65535")
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise DistributedError(f"--port {port} on {HOST} is not free ({exc.strerror}); pass another --port "
                                   "or leave it out to pick a free one") from None
    return port


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up in the parent: a child between fork and exec must not open libraries (the
    loader's lock may be held by a thread that did not follow it)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def die_with_parent() -> None:
    """In a child, before exec: get SIGKILL when the process that started it dies, so none outlives it (Linux)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def safe_path_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child ``python -m``: Python's own switch (``PYTHONSAFEPATH``, 3.11+) keeps the working
    folder off ``sys.path``, so a module planted there cannot stand in for the project's; the project's root
    comes first on ``PYTHONPATH`` instead, and its empty entries are dropped (``/x:`` or ``:/x`` puts the
    working folder back on ``sys.path``, whatever PYTHONSAFEPATH says)."""
    entries = [str(ROOT), *env.get("PYTHONPATH", "").split(os.pathsep)]
    return {**env, "PYTHONSAFEPATH": "1", "PYTHONPATH": os.pathsep.join(p for p in entries if p)}


def base_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PORT"}  # ps-lite reads PORT as its own port
    env.update(VGG_LAUNCHED="1", VGG_THREADS=str(threads), OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1",
               TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env = safe_path_env(env)
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(proxy, None)  # gRPC (TF) and JAX's coordinator would send loopback traffic to a proxy
    return env


@dataclass
class _Child:
    label: str
    proc: subprocess.Popen
    rank: int | None  # None for MXNet's scheduler and server
    heartbeat: Path | None = None  # the file a worker touches at every training step
    last_output: float = field(default_factory=time.time)
    pumps: list[threading.Thread] = field(default_factory=list)

    def last_progress(self) -> float:
        """When this worker last printed a line or took a training step (wall-clock seconds)."""
        try:
            return max(self.last_output, self.heartbeat.stat().st_mtime) if self.heartbeat else self.last_output
        except FileNotFoundError:
            return self.last_output


def _write(out: IO[str], text: str) -> None:
    """Write and flush; a reader that went away (``vgg train ... | head``) gets the rest sent to /dev/null,
    so the pump keeps draining the worker's pipe and the worker never blocks on a full one."""
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def _pump(stream: IO[bytes], out: IO[str], child: _Child) -> None:
    """Copy ``stream`` to ``out`` line by line (``\\r`` ends a line too, for progress bars), prefixed with the
    child's label; every line counts as progress."""
    prefix, pending = f"[{child.label}] ", b""
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            break
        child.last_output = time.time()
        pending += chunk
        parts = re.split(rb"(\r\n|\n|\r)", pending)
        pending = parts.pop()
        for text, end in zip(parts[::2], parts[1::2]):
            _write(out, prefix + text.decode("utf-8", "replace") + end.decode())
    if pending:
        _write(out, prefix + pending.decode("utf-8", "replace") + "\n")


#: the holder of a job's private network: it enters a new network namespace, brings its loopback up, says
#: so in one line (or why it could not) and waits to be stopped; standard library only, so single-threaded
_HOLDER = ("import signal; from common.runtime import confine; problem = confine.own_network(loopback=True); "
           "print(problem or 'ok', flush=True); problem or signal.pause()")


@contextlib.contextmanager
def private_network() -> Iterator[tuple[int | None, str | None]]:
    """``(pid, None)`` of a process holding a new network namespace with only loopback, for workers to join
    while the block runs; ``(None, why)`` where the kernel does not allow one."""
    holder = subprocess.Popen(_python_code(_HOLDER), env=safe_path_env(dict(os.environ)), stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                              preexec_fn=die_with_parent)
    stdout = holder.stdout
    assert stdout is not None  # stdout=PIPE
    try:
        said = stdout.readline().strip()
        yield (holder.pid, None) if said == "ok" else (None, said or f"its holder {describe_exit(holder.wait())}")
    finally:
        holder.kill()
        holder.wait()
        stdout.close()


#: a fresh interpreter that joins the namespaces of the holder (its first argument) and becomes the command
#: that follows: joining a user namespace needs a single-threaded process, which a child forked from the
#: launcher is not once a framework's fork handlers have started threads in it (MXNet's engine does)
_JOIN = ("import os, sys; from common.runtime import confine; confine.join_network(int(sys.argv[1])); "
         "os.execv(sys.argv[2], sys.argv[2:])")


def _start(cmd: list[str], env: dict[str, str], label: str, rank: int | None, holder: int | None = None) -> _Child:
    if holder is not None:
        cmd = [*_python_code(_JOIN), str(holder), *cmd]
    proc = subprocess.Popen(cmd, env=env, cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
    beat = env.get(distributed.HEARTBEAT_VARIABLE)
    child = _Child(label, proc, rank, Path(beat) if beat else None)
    for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
        t = threading.Thread(target=_pump, args=(stream, out, child), daemon=True)
        t.start()
        child.pumps.append(t)
    return child


def _stop(children: list[_Child]) -> None:
    """SIGTERM every child still running (SIGCONT too, so a stopped one can act on it), then SIGKILL
    stragglers."""
    alive = [c for c in children if c.proc.poll() is None]
    for c in alive:
        try:
            c.proc.send_signal(signal.SIGTERM)
            c.proc.send_signal(signal.SIGCONT)
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


def _stalled(workers: list[_Child], timeout: float) -> str | None:
    """The silent ranks, longest silent first, when no worker has made progress for ``timeout`` seconds."""
    now = time.time()
    silent = sorted(((now - c.last_progress(), c) for c in workers), key=lambda t: -t[0])
    if not silent or silent[-1][0] < timeout:
        return None
    return ", ".join(f"{c.label} (pid {c.proc.pid}) for {age:.0f} s" for age, c in silent)


def _python(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def _python_code(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def launch(backend: str, module: str, args: list[str], workers: int, *, threads: int, port: int | None = None,
           prog: str = "vgg", stall_timeout: float = STALL_TIMEOUT_S) -> int:
    """Run ``python -m module args`` in ``workers`` processes on this machine with ``backend``'s engine;
    return 0 when all succeed, else the failed worker's status (1 for a signal or a stall), 130 on Ctrl-C."""
    port = check_port(port, backend) if port else free_port()
    with tempfile.TemporaryDirectory(prefix="vgg-launch-") as scratch, private_network() as (holder, why):
        if holder is None and backend == "tf":
            print(f"{prog}: warning: no private network for the workers ({why}), and TensorFlow's "
                  f"MultiWorkerMirroredStrategy servers listen on all network interfaces, IPv6 and IPv4 ([::] and "
                  f"0.0.0.0), unauthenticated, while this job runs; on a network you do not trust use --devices "
                  f"{workers} (one process) instead", file=sys.stderr)
        elif holder is None:
            print(f"{prog}: note: no private network for the workers ({why}); they listen on loopback only",
                  file=sys.stderr)
        envs = distributed.worker_environments(backend, base_env(threads), workers, threads, port, free_port,
                                               Path(scratch))
        children: list[_Child] = []
        if backend == "mxnet":
            for role in ("scheduler", "server"):  # importing MXNet with a non-worker role runs that node
                env = {**distributed.mxnet_environment(base_env(1), workers, port), "DMLC_ROLE": role}
                children.append(_start(_python("vgg_mxnet.framework"), env, f"mxnet {role}", None, holder))
        for rank, env in enumerate(envs):
            children.append(_start(_python(module) + args, {**env, "VGG_LAUNCH_RANK": str(rank)},
                                   f"rank {rank}", rank, holder))
        return _watch(children, workers, prog, stall_timeout)


def launch_node(backend: str, module: str, args: list[str], workers: int, nodes: Nodes, *, threads: int,
                prog: str = "vgg", stall_timeout: float = STALL_TIMEOUT_S) -> int:
    """Run this node's ``workers`` processes of a job across ``nodes`` (and, on node 0, MXNet's scheduler and
    server), each engine on this node's interface; status as :func:`launch`. The workers need the network,
    so they share this machine's: every listener is bound to this node's address where the framework allows
    it, and TensorFlow's, which binds every interface, is said."""
    if backend == "tf":
        print(f"{prog}: warning: TensorFlow's MultiWorkerMirroredStrategy servers listen on all network interfaces "
              f"of this node ([::] and 0.0.0.0, ports {nodes.port}-{nodes.port + workers - 1}), unauthenticated, "
              "while this job runs: run it on a network you trust", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="vgg-launch-") as scratch:
        envs = distributed.worker_environments(backend, base_env(threads), workers, threads, nodes.port, free_port,
                                               Path(scratch), nodes)
        children: list[_Child] = []
        if backend == "mxnet" and nodes.rank == 0:
            for role, port in (("scheduler", {}), ("server", {"PORT": str(nodes.port + 1)})):
                env = {**distributed.mxnet_environment(base_env(1), nodes.count * workers, nodes.port, nodes.master,
                                                       nodes.address), "DMLC_ROLE": role, **port}
                children.append(_start(_python("vgg_mxnet.framework"), env, f"mxnet {role}", None))
        for k, env in enumerate(envs):
            rank = nodes.rank * workers + k  # MXNet's ps-lite numbers its workers itself: name them by node
            label = f"node {nodes.rank}.{k}" if backend == "mxnet" else f"rank {rank}"
            children.append(_start(_python(module) + args, {**env, "VGG_LAUNCH_RANK": str(rank)}, label, rank))
        return _watch(children, workers, prog, stall_timeout)


def _watch(children: list[_Child], workers: int, prog: str, stall_timeout: float) -> int:
    """Wait for the job: 0 when every worker succeeded, else stop everyone and say why."""
    watched = [c for c in children if c.rank is not None]
    try:
        while True:
            ended = [c for c in children if c.proc.poll() not in (None, 0)]
            if ended:  # several at once: the one a signal ended is the cause, the others followed it
                failed = min(ended, key=lambda c: (c.proc.returncode >= 0, c.rank or 0))
                break
            if all(c.proc.poll() == 0 for c in watched):
                _finish(children)
                return 0
            if silent := _stalled([c for c in watched if c.proc.poll() is None], stall_timeout):
                _stop(children)
                print(f"{prog}: error: no worker made progress for {stall_timeout:g} s (--stall-timeout): "
                      f"silent {silent}; stopped all {workers} workers", file=sys.stderr)
                return 1
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(children)
        print(f"{prog}: interrupted; stopped all {workers} workers", file=sys.stderr)
        return 130
    code = failed.proc.returncode
    _stop(children)
    print(f"{prog}: error: worker {failed.label} (pid {failed.proc.pid}) {describe_exit(code)}; stopped the other "
          "workers", file=sys.stderr)
    return code if code > 0 else 1


def _finish(children: list[_Child]) -> None:
    """After the workers succeeded: MXNet's scheduler and server end by themselves; wait, then stop them."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(c.proc.poll() is None for c in children):
        time.sleep(0.1)
    _stop(children)
