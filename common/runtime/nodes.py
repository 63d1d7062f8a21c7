"""Several machines ("nodes") in one data-parallel job: every node's address, which one this is, the network
interface that holds its address, and the ports each engine opens there, so that every node of a job can be
started with the same ``vgg train --nodes A,B --node-rank R`` and each engine talks over that interface.

Node 0 runs the coordinator (torch's store, JAX's coordination service, MXNet's scheduler and server). One
``--port`` P is the base of every port a job binds: the coordinator on node 0 at P, MXNet's server at P + 1,
and on every node, worker ``k`` (of that node) at P + k for TensorFlow's servers and P + 2 + k for MXNet's
workers; torch's and JAX's gloo pairs take ephemeral ports on the node's address."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass

from common.runtime.distributed import DistributedError

#: the base port when --port is not given: every node must agree on it, so it cannot be picked free
DEFAULT_PORT = 29500
_SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class Nodes:
    """A job's nodes: their IPv4 ``addresses`` (node 0, the coordinator's, first), this node's ``rank``,
    the base ``port`` and the ``interface`` that holds this node's address."""

    addresses: tuple[str, ...]
    rank: int
    port: int
    interface: str

    @property
    def count(self) -> int:
        return len(self.addresses)

    @property
    def address(self) -> str:
        """This node's own address: every socket a worker here listens on is bound to it."""
        return self.addresses[self.rank]

    @property
    def master(self) -> str:
        """Node 0's address, where the coordinator listens."""
        return self.addresses[0]

    def describe(self) -> str:
        return (f"node {self.rank} of {self.count} ({self.address} on {self.interface}; coordinator "
                f"{self.master}:{self.port})")


def interfaces() -> dict[str, str]:
    """This machine's IPv4 address of every network interface that has one, by interface name."""
    found = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on it
            found[name] = socket.inet_ntoa(raw[20:24])
    return found


def _resolve(name: str) -> str:
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
    except (socket.gaierror, IndexError):
        raise DistributedError(f"--nodes: {name!r} is neither an IPv4 address nor a host name this machine "
                               "resolves") from None


def parse(text: str, rank: int | None, port: int | None) -> Nodes:
    """``--nodes A,B,... --node-rank R [--port P]`` as Nodes, after checking that this machine holds node
    R's address on one of its interfaces (the one each engine is told to use)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) < 2:
        raise DistributedError(f"--nodes {text!r} names {len(names)} node(s): a job across machines needs at "
                               "least 2 addresses, node 0 (the coordinator) first; on one machine use --workers")
    addresses = tuple(_resolve(n) for n in names)
    if len(set(addresses)) != len(addresses):
        raise DistributedError(f"--nodes {text!r} names one address twice ({', '.join(addresses)}): every node is "
                               "a machine of its own; on one machine use --workers")
    if rank is None:
        raise DistributedError("--nodes needs --node-rank: this machine's place in --nodes, 0 to "
                               f"{len(addresses) - 1}")
    if not 0 <= rank < len(addresses):
        raise DistributedError(f"--node-rank {rank} is not allowed: --nodes names {len(addresses)} nodes, so it "
                               f"must be 0 to {len(addresses) - 1}")
    held = interfaces()
    interface = next((name for name, address in held.items() if address == addresses[rank]), None)
    if interface is None:
        have = ", ".join(f"{name} {address}" for name, address in held.items()) or "none"
        raise DistributedError(f"--node-rank {rank} is {addresses[rank]} in --nodes, but no network interface of "
                               f"this machine holds that address (it has: {have})")
    return Nodes(addresses, rank, DEFAULT_PORT if port is None else port, interface)


def bound_ports(nodes: Nodes, backend: str, workers: int) -> list[int]:
    """The ports ``backend``'s job binds on this node's address (see the module's docstring)."""
    p, first = nodes.port, nodes.rank == 0
    if backend == "tf":
        return [p + k for k in range(workers)]
    if backend == "mxnet":
        return ([p, p + 1] if first else []) + [p + 2 + k for k in range(workers)]
    return [p] if first else []  # torch's store, JAX's coordinator


def check_ports(nodes: Nodes, backend: str, workers: int) -> None:
    """Refuse in one line a port this node's workers would bind that something else holds on its address."""
    for port in bound_ports(nodes, backend, workers):
        if not 0 < port < 65536:
            raise DistributedError(f"--port {nodes.port} leaves {backend}'s port {port} outside 1-65535")
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: a closed job's TIME_WAIT is free
            try:
                s.bind((nodes.address, port))
            except OSError as exc:
                raise DistributedError(f"port {port} on {nodes.address} is not free ({exc.strerror}): {backend} "
                                       f"binds ports {', '.join(map(str, bound_ports(nodes, backend, workers)))} "
                                       "on this node; pass another --port, the same on every node") from None


def check_host_name(nodes: Nodes) -> None:
    """JAX's CPU collectives (gloo) take a node's address from its host name, with no setting to name an
    interface: refuse to start where that name does not resolve to this node's address first, since the
    other nodes would then be told an address they cannot reach (Debian maps the host name to 127.0.1.1)."""
    name = socket.gethostname()
    try:
        found = [str(info[4][0]) for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)]
    except socket.gaierror as exc:
        found, why = [], f"it does not resolve ({exc.strerror})"
    else:
        why = f"it resolves to {', '.join(dict.fromkeys(found))}"
    if not found or found[0] != nodes.address:
        raise DistributedError(f"jax: JAX's CPU collectives (gloo) tell the other nodes the address this machine's "
                               f"host name {name!r} resolves to, and {why}, not {nodes.address} (node {nodes.rank} "
                               f"in --nodes); JAX has no setting for it: map {name!r} to {nodes.address} first "
                               "(/etc/hosts or DNS) on this node")
