"""Confinement of the calling process by the kernel, for code the project does not trust (an opened model
file) or should not expose (single-machine workers): an address-space cap, a network namespace of its own,
and Landlock's rules against writing outside one folder, connecting or binding TCP and signalling out.

Each function applies what the kernel offers and says what it could not: Linux only (elsewhere nothing but
the memory cap applies); ``unshare`` needs a single-threaded process, so call it before importing anything
that starts threads (NumPy's BLAS does). Standard library only, for the same reason."""

from __future__ import annotations

import ctypes
import os
import resource
import struct
import sys

CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
_PR_SET_NO_NEW_PRIVS = 38
#: landlock_create_ruleset, landlock_add_rule, landlock_restrict_self (one number on every architecture)
_CREATE, _ADD_RULE, _RESTRICT = 444, 445, 446
_VERSION = 1 << 0
_PATH_BENEATH = 1
#: filesystem rights that change something (writing, truncating, creating, removing, linking, renaming) and
#: the Landlock ABI that introduced each; reading and executing stay allowed
_FS_WRITES = ((1 << 1, 1), (1 << 4, 1), (1 << 5, 1), (1 << 6, 1), (1 << 7, 1), (1 << 8, 1), (1 << 9, 1),
              (1 << 10, 1), (1 << 11, 1), (1 << 12, 1), (1 << 13, 2), (1 << 14, 3))
#: of those, the rights a rule on a single file may grant (write, truncate)
_FILE_RIGHTS = (1 << 1) | (1 << 14)
_NET_TCP = ((1 << 0) | (1 << 1), 4)  # bind and connect TCP, from ABI 4
_SCOPES = ((1 << 0) | (1 << 1), 6)  # abstract Unix sockets and signals outside the domain, from ABI 6


class ConfineError(OSError):
    """A confinement the kernel refused although it claimed to offer it."""


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def limit_memory(max_bytes: int) -> None:
    """Cap the process's address space at ``max_bytes`` (``RLIMIT_AS``): an allocation beyond it fails
    (MemoryError, std::bad_alloc) instead of taking the machine's memory."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        max_bytes = min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, hard))


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def own_network(loopback: bool = False) -> str | None:
    """Move the (single-threaded) process into a new user and network namespace, which holds only a
    loopback interface, down unless ``loopback``; None on success, else why it was not possible."""
    if not sys.platform.startswith("linux"):
        return f"no network namespaces on {sys.platform}"
    uid, gid = os.geteuid(), os.getegid()
    libc = _libc()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWUSER | CLONE_NEWNET): {os.strerror(ctypes.get_errno())}"
    _write("/proc/self/setgroups", "deny")  # this process's own ids, mapped to themselves
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    if loopback:
        _loopback_up()
    return None


def join_network(pid: int) -> None:
    """Move the (single-threaded) process into the user and network namespaces of process ``pid`` (one that
    ran :func:`own_network`), so that several processes share one private network."""
    libc = _libc()
    for kind, flag in (("user", CLONE_NEWUSER), ("net", CLONE_NEWNET)):
        fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, flag) != 0:
                raise ConfineError(ctypes.get_errno(), f"setns({kind}): {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)


def _loopback_up() -> None:
    """Bring ``lo`` up (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP): the namespace's own, so that processes
    inside can talk to each other over 127.0.0.1 and ::1."""
    import fcntl
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s.fileno(), 0x8913, request))[1]
        fcntl.ioctl(s.fileno(), 0x8914, struct.pack("16sh", b"lo", flags | 0x1))


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where it has none (or it is disabled)."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _libc().syscall(_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(_VERSION))
    return max(int(version), 0)


def _add_path(libc, ruleset: int, path: str, rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        attr = struct.pack("=Qi", rights, fd)
        if libc.syscall(_ADD_RULE, ruleset, _PATH_BENEATH, ctypes.c_char_p(attr), ctypes.c_uint32(0)) != 0:
            raise ConfineError(ctypes.get_errno(), f"landlock_add_rule({path}): {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def landlock(writable: str, files: tuple[str, ...] = ("/dev/null",)) -> list[str]:
    """Restrict the process, for good, to writing under ``writable`` (and to the single ``files``), with no
    TCP and no signals or abstract sockets beyond itself where the ABI has them; returns what was restricted
    (empty where the kernel has no Landlock)."""
    abi = landlock_abi()
    if abi < 1:
        return []
    fs = sum(right for right, since in _FS_WRITES if abi >= since)
    net = _NET_TCP[0] if abi >= _NET_TCP[1] else 0
    scoped = _SCOPES[0] if abi >= _SCOPES[1] else 0
    attr = struct.pack("=QQQ", fs, net, scoped)[:24 if scoped else 16 if net else 8]  # the fields this ABI has
    libc = _libc()
    ruleset = libc.syscall(_CREATE, ctypes.c_char_p(attr), ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise ConfineError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        _add_path(libc, ruleset, writable, fs)
        for path in files:
            if os.path.exists(path):
                _add_path(libc, ruleset, path, fs & _FILE_RIGHTS)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise ConfineError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_RESTRICT, ruleset, ctypes.c_uint32(0)) != 0:
            raise ConfineError(ctypes.get_errno(), f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)
    return [f"writes only under {writable} (Landlock ABI {abi})", *(["no TCP bind or connect"] if net else []),
            *(["no signals or abstract sockets outside"] if scoped else [])]


def available() -> dict[str, str]:
    """What this machine offers, for docs and test skips: each confinement and whether it applies here."""
    abi = landlock_abi()
    linux = sys.platform.startswith("linux")
    return {"memory cap": "RLIMIT_AS",
            "network namespace": "unshare(CLONE_NEWUSER | CLONE_NEWNET)" if linux else "none",
            "landlock": f"ABI {abi}" if abi else "none"}
