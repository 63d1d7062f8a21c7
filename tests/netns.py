"""Several machines on one: each node a Linux network namespace with an interface, an address, a host name
and an /etc/hosts of its own, all joined by a bridge in a namespace of their own, so that a multi-node job
runs as it would across hosts. Only addresses inside these namespaces are used; nothing reaches this
machine's own network. Needs root (``ip netns``), as CI has; :func:`unavailable` says why not elsewhere."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers import ROOT
from processes import ListenerWatch, descendants

#: the nodes' subnet: private, and only ever assigned inside the namespaces a Cluster creates
SUBNET = "10.77.0"
#: the interface each node has (namespaces keep names apart)
INTERFACE = "eth0"
_HOSTS = Path("/etc/netns")  # ip netns exec binds /etc/netns/NAME/hosts over /etc/hosts


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def unavailable() -> str | None:
    """Why this machine cannot hold namespace nodes (not root, no ``ip`` or ``unshare``, a kernel that
    refuses), or None."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux's; this is {sys.platform}"
    if os.geteuid() != 0:
        return "creating network namespaces (ip netns add) needs root; CI runs the suite as root"
    for tool in ("ip", "unshare", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2, util-linux)"
    probe = f"vgg-probe-{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _remove_orphans() -> None:
    """Delete the namespaces of clusters whose process died without deleting them (a killed test run)."""
    listed = _ip("netns", "list", check=False).stdout.split()
    for name in listed:
        if (found := re.fullmatch(r"vgg(\d+)-(n\d+|sw)", name)) and not Path(f"/proc/{found.group(1)}").exists():
            _ip("netns", "del", name, check=False)
            shutil.rmtree(_HOSTS / name, ignore_errors=True)


class Cluster:
    """``count`` nodes named node0, node1, ... at 10.77.0.1, .2, ...; use as a context manager, which
    deletes everything it made, whatever happened."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.tag = f"vgg{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.names = [f"{self.tag}-n{i}" for i in range(count)]
        self.hosts = [f"node{i}" for i in range(count)]
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(count)]

    def __enter__(self) -> Cluster:
        _remove_orphans()
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            table = "127.0.0.1 localhost\n" + "".join(f"{a} {h}\n" for a, h in zip(self.addresses, self.hosts))
            for i, name in enumerate(self.names):
                _ip("netns", "add", name)
                (_HOSTS / name).mkdir(parents=True, exist_ok=True)
                (_HOSTS / name / "hosts").write_text(table)
                _ip("link", "add", INTERFACE, "netns", name, "type", "veth", "peer", "name", f"p{i}", "netns",
                    self.switch)
                _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0", "up")
                _ip("-n", name, "addr", "add", f"{self.addresses[i]}/24", "dev", INTERFACE)
                _ip("-n", name, "link", "set", INTERFACE, "up")
                _ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for name in [*self.names, self.switch]:
            _ip("netns", "del", name, check=False)
            shutil.rmtree(_HOSTS / name, ignore_errors=True)

    def command(self, node: int, argv: list[str]) -> list[str]:
        """``argv`` run on ``node``: in its network namespace, under its own host name."""
        return ["ip", "netns", "exec", self.names[node], "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', self.hosts[node], *argv]

    def vgg(self, node: int, *args: str, **popen) -> subprocess.Popen:
        """``vgg ARGS`` on ``node`` (the project's CLI in this interpreter); output as ``popen`` says, else
        captured as text."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **popen.pop("env", {})}
        popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
        return subprocess.Popen(self.command(node, [sys.executable, "-m", "common.tools.cli", *args]), env=env,
                                cwd=ROOT, stdin=subprocess.DEVNULL, text=True, start_new_session=True, **popen)

    def nodes_option(self) -> list[str]:
        return ["--nodes", ",".join(self.addresses)]

    def link(self, node: int, up: bool) -> None:
        """Take ``node``'s interface down (as a pulled cable) or back up."""
        _ip("-n", self.names[node], "link", "set", INTERFACE, "up" if up else "down")

    def shape(self, node: int, *qdisc: str) -> str | None:
        """Put ``tc qdisc replace ... root QDISC`` on ``node``'s interface (what it sends); the kernel's
        refusal (a queueing discipline it was built without) as text, else None."""
        done = subprocess.run(["ip", "netns", "exec", self.names[node], "tc", "qdisc", "replace", "dev", INTERFACE,
                               "root", *qdisc], capture_output=True, text=True)
        return (done.stderr.strip() or f"tc exited with {done.returncode}") if done.returncode else None


def launched_workers(launcher: int) -> list[int]:
    """The worker processes (``vgg train`` children with the launcher's mark) below ``launcher``."""
    found = []
    for pid in descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"VGG_LAUNCHED=1" in env and b"common.tools.cli" in cmdline:
            found.append(pid)
    return found


@dataclass
class Node:
    """One node's ``vgg train``: its process, where its output goes, when it ended and what it listened on."""

    proc: subprocess.Popen
    out: Path
    err: Path
    watch: ListenerWatch
    ended: float | None = None
    listeners: set[tuple[str, int, bool]] = field(default_factory=set)

    def text(self) -> tuple[str, str]:
        return self.out.read_text(), self.err.read_text()


class Job:
    """The same ``vgg ARGS --nodes ... --node-rank R`` started on every node of ``cluster`` (output in
    ``logs``), watched until each ends."""

    def __init__(self, cluster: Cluster, args: list[str], logs: Path, label: str = "job",
                 env: dict[str, str] | None = None, cores: list[int] | None = None) -> None:
        """``cores``: pin node i to core ``cores[i]`` (its process and everything it starts)."""
        logs.mkdir(parents=True, exist_ok=True)
        self.cluster, self.nodes = cluster, []
        for i in range(cluster.count):
            out, err = logs / f"{label}-node{i}.out", logs / f"{label}-node{i}.err"
            pin = {"preexec_fn": (lambda core=cores[i]: os.sched_setaffinity(0, {core}))} if cores else {}
            with open(out, "w") as o, open(err, "w") as e:
                proc = cluster.vgg(i, *args, *cluster.nodes_option(), "--node-rank", str(i), stdout=o, stderr=e,
                                   env=env or {}, **pin)
            self.nodes.append(Node(proc, out, err, ListenerWatch(proc.pid, descendants)))

    def workers(self, node: int) -> list[int]:
        return launched_workers(self.nodes[node].proc.pid)

    def wait(self, timeout: float) -> bool:
        """Wait until every node's ``vgg`` ended (noting when each did) or ``timeout`` passed; then kill
        what is left and stop watching; whether all ended by themselves."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(n.ended is None for n in self.nodes):
            for n in self.nodes:
                if n.ended is None and n.proc.poll() is not None:
                    n.ended = time.monotonic()
            time.sleep(0.05)
        by_themselves = all(n.ended is not None for n in self.nodes)
        for n in self.nodes:
            if n.proc.poll() is None:
                os.killpg(n.proc.pid, signal.SIGKILL)
                n.proc.wait()
            n.listeners = n.watch.stop()
        return by_themselves

    def codes(self) -> list[int | None]:
        return [n.proc.returncode for n in self.nodes]
