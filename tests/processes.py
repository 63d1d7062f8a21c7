"""Real ``vgg`` subprocesses for the tests: start one, wait for its first checkpoint or any condition, see what
it listens on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common.runtime import checkpoint
from helpers import ROOT


def _as_in_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it. A suite started in the background by a non-interactive shell
    (``bash -c '... &'``, some CI runners) inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler, so the Ctrl-C tests would test the shell instead of ``vgg``."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def vgg_cli(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """``vgg ...`` as a real subprocess (the installed console script's module), with Ctrl-C working; ``env``
    adds to this process's environment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "common.tools.cli", *args], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_as_in_a_terminal, **kw)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition()`` held within ``timeout`` seconds, asked every 20 ms: a bound, not a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def wait_for_first_checkpoint(proc: subprocess.Popen, folder: Path, timeout: float = 300) -> Path:
    """The path of epoch 1's checkpoint in ``folder``, once it exists, ``proc`` ended or ``timeout`` passed."""
    first = checkpoint.path_for(folder, 1)
    wait_until(lambda: first.exists() or proc.poll() is not None, timeout)
    return first


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (workers run in sessions of their own)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        found += map(int, children)
        todo += map(int, children)
    return found


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _address(hex_address: str) -> str:
    """``/proc/net/tcp*``'s hex address as text: 127.0.0.1, ::, ::1 or ::ffff:127.0.0.1 style."""
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # four little-endian 32-bit words
    return socket.inet_ntop(socket.AF_INET6, words)


def listening(pids: list[int]) -> set[tuple[str, int, bool]]:
    """``(address, port, private)`` of every TCP socket that one of ``pids`` holds in the LISTEN state, read from
    each process's own view of ``/proc/net/tcp`` and ``tcp6`` (its network namespace's) and its open files;
    private when that namespace is not this process's."""
    found = set()
    own = os.readlink("/proc/self/ns/net")
    for pid in pids:
        inodes = _socket_inodes(pid)
        try:
            private = os.readlink(f"/proc/{pid}/ns/net") != own
            tables = [Path(f"/proc/{pid}/net/{t}").read_text() for t in ("tcp", "tcp6")]
        except OSError:  # it ended meanwhile
            continue
        for table in tables:
            for line in table.splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                    address, port = fields[1].rsplit(":", 1)
                    found.add((_address(address), int(port, 16), private))
    return found


def is_loopback(address: str) -> bool:
    return address in ("::1", "127.0.0.1") or address.startswith(("127.", "::ffff:127."))


class ListenerWatch:
    """Samples, in a thread, what the processes below ``pid`` listen on, until stopped."""

    def __init__(self, pid: int, descendants) -> None:
        self.found: set[tuple[str, int, bool]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pid, descendants), daemon=True)
        self._thread.start()

    def _run(self, pid: int, descendants) -> None:
        while not self._stop.is_set():
            self.found |= listening([pid, *descendants(pid)])
            self._stop.wait(0.05)

    def stop(self) -> set[tuple[str, int, bool]]:
        self._stop.set()
        self._thread.join()
        return self.found


#: runs the command given after its first argument and writes ``[exit status, peak KiB]`` of it (and of every
#: descendant it waited for) to the file named first: a small process of its own, since a child forked from
#: the suite's big one would start with the suite's resident set as its peak (Linux keeps it across exec)
_MEASURER = ("import json, os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, status, usage = "
             "os.wait4(p.pid, 0); open(sys.argv[1], 'w').write(json.dumps([os.waitstatus_to_exitcode(status), "
             "usage.ru_maxrss]))")


def run_measured(argv: list[str], timeout: float = 300, env: dict | None = None,
                 cwd: Path | None = None) -> tuple[int, str, str, int]:
    """``vgg argv`` as a real process: ``(exit status, stdout, stderr, peak bytes)``, where peak is the
    largest resident set of it and every descendant it waited for (``wait4``'s rusage), for memory bounds."""
    import json
    import tempfile
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with tempfile.TemporaryDirectory() as folder:
        result, out, err = (Path(folder) / name for name in ("result", "out", "err"))
        with open(out, "w") as o, open(err, "w") as e:
            proc = subprocess.Popen([sys.executable, "-c", _MEASURER, str(result), sys.executable, "-m",
                                     "common.tools.cli", *map(str, argv)], env=env, cwd=cwd or ROOT, stdout=o,
                                    stderr=e, stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return -signal.SIGKILL, out.read_text(), err.read_text(), 0
        status, peak_kib = json.loads(result.read_text())
        return status, out.read_text(), err.read_text(), peak_kib * 1024
