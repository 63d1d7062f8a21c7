"""The backend registry, as plain data: every fact keyed by a backend's name lives here, once (package,
install extra, distributions, layout, file suffixes, engines, thread settings, supported Pythons). Loading
a backend is a tool's job (``common.tools.loading``); nothing here imports a framework."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class BackendInfo:
    """What the project knows of one backend without importing it."""

    name: str
    package: str  # the importable package: ``import vgg_torch as vgg``
    extra: str  # the pip extra that installs its framework
    distributions: tuple[str, ...]  # the distributions that make the framework, the framework's own first
    layout: str  # the images' native layout
    trained_suffix: str  # the model file ``vgg train`` writes (``vgg.save``)
    native_suffix: str  # its native serving export
    engine: str  # the data-parallel engine across processes
    launcher: str  # what starts its workers
    threads: str  # how ``vgg compare`` gives it the machine's cores
    pythons: tuple[tuple[int, int], tuple[int, int] | None, str] = ((3, 10), None, "")  # oldest, first not, why
    in_process_devices: bool = True  # whether one process can drive several devices (``--devices``)
    #: how its CPU build computes bf16 and fp16 products: "onednn" (native kernels where the CPU has bf16
    #: instructions, emulated and far slower where it has not), "upcast" (in float32, rounded to the format:
    #: right numbers, no speed-up) or "none" (not offered; the reason is in ``mixed_why``)
    cpu_mixed: str = "onednn"
    mixed_why: str = ""


BACKENDS: dict[str, BackendInfo] = {b.name: b for b in (
    BackendInfo("torch", "vgg_torch", "torch", ("torch",), "NCHW", ".pt", ".pt2",
                "DistributedDataParallel (gloo on CPU, nccl on CUDA)", "vgg launcher (file store)",
                "torch.set_num_threads(cores), OMP_NUM_THREADS=cores", in_process_devices=False),
    BackendInfo("tf", "vgg_tf", "tf", ("tensorflow", "keras"), "NHWC", ".weights.h5", ".savedmodel",
                "MultiWorkerMirroredStrategy (TF_CONFIG)", "vgg launcher",
                "intra-op threads = cores, inter-op threads = 1",
                ((3, 11), None, "Keras 3.13+ needs Python 3.11 or newer")),
    BackendInfo("jax", "vgg_jax", "jax", ("jax", "jaxlib", "flax", "optax"), "NHWC", ".msgpack", ".jax_export",
                "jax.distributed + Mesh/NamedSharding (gloo on CPU)", "vgg launcher",
                "XLA CPU defaults (all cores), OMP_NUM_THREADS=cores",
                ((3, 11), None, "JAX 0.7+ and Flax 0.12+ need Python 3.11 or newer"), cpu_mixed="upcast"),
    BackendInfo("mxnet", "vgg_mxnet", "mxnet", ("mxnet",), "NCHW", ".params", ".mxnet",
                "kvstore dist_sync (scheduler, server, workers)", "vgg launcher",
                "OMP_NUM_THREADS=cores (read at import)",
                ((3, 10), (3, 13), "MXNet 1.9.1 needs NumPy 1, which has no wheels for Python 3.13+"),
                cpu_mixed="none",
                mixed_why="MXNet's AMP does nothing under the NumPy-compatible API (npx.set_np()) vgg_mxnet uses, and "
                          "its oneDNN has no bf16 without AVX-512 BF16 instructions"),
)}
NAMES = tuple(BACKENDS)


class BackendError(RuntimeError):
    """A backend that is unknown, not installed or broken."""


def info(name: str) -> BackendInfo:
    """The registry's entry for ``name``, or BackendError listing the names."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")
    return BACKENDS[name]


def distribution_version(dist: str) -> str | None:
    """The installed version of a distribution, read from its metadata without importing it; None if absent."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def framework_version(name: str) -> str | None:
    """The installed version of backend ``name``'s framework, or None."""
    return distribution_version(BACKENDS[name].distributions[0])


def environment(name: str) -> dict[str, str | None]:
    """What backend ``name`` runs on in this interpreter: Python, NumPy and its framework's distributions."""
    return {"python": platform.python_version(), "executable": sys.executable,
            **{dist: distribution_version(dist) for dist in ("numpy", *BACKENDS[name].distributions)}}


def install_hint(name: str, python: tuple[int, int] = sys.version_info[:2]) -> str:
    """How to install backend ``name``, or why it cannot be installed under ``python``."""
    entry = BACKENDS[name]
    low, high, why = entry.pythons
    if python < low or (high and python >= high):
        return (f"{why} (this is {python[0]}.{python[1]}): "
                f"install it with pip install -e '.[{entry.extra}]' under such a Python")
    pre = "pip install torch==2.13.0 && " if name == "torch" else ""
    return f"install it with: {pre}pip install -e '.[{entry.extra}]'"
