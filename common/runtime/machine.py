"""The machine a measurement ran on, as every report states it: cores, CPU model and vector extensions
(figures differ between AVX2 and AVX-512 CPUs), each framework's thread setting, and a process's peak memory."""

from __future__ import annotations

import os
import resource
from datetime import datetime, timezone
from pathlib import Path

from common.core import backends

#: what each framework is told, with the same core count everywhere
THREADS = {name: b.threads for name, b in backends.BACKENDS.items()}


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``avx2``, ``avx512_bf16``, ``amx_tile``, ...) from /proc/cpuinfo; empty if unknown."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))


def cpu() -> str:
    """The CPU model (with its family and model numbers: a cloud's "AMD EPYC" names Zen 3 and Zen 4 alike)
    and its widest vector extensions."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    fields: dict[str, str] = {}
    for line in info:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name", "unknown")
    if "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']} model {fields['model']})"
    flags = cpu_flags()
    wide = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx2", "fma") if f in flags]
    return f"{model}, {' '.join(wide) or 'no AVX2'}"


def machine() -> dict:
    """Cores, CPU model and vector ISA, thread settings, date: the ``machine`` block of vgg compare's and vgg
    race's reports (each run holds its own versions)."""
    return {"cores": cores(), "cpu": cpu(), "threads": THREADS,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
