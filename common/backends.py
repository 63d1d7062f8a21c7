"""The four backends by name, importable with a clear error that says how to install a missing one."""

from __future__ import annotations

import importlib
import platform
import sys
from importlib import metadata
from types import ModuleType

#: backend name -> (module, the pip extra that installs its framework, the distributions that make the framework)
BACKENDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "torch": ("vgg_torch", "torch", ("torch",)),
    "tf": ("vgg_tf", "tf", ("tensorflow", "keras")),
    "jax": ("vgg_jax", "jax", ("jax", "jaxlib", "flax", "optax")),
    "mxnet": ("vgg_mxnet", "mxnet", ("mxnet",)),
}
NAMES = tuple(BACKENDS)


class BackendError(RuntimeError):
    """A backend that is unknown, not installed or broken."""


def distribution_version(dist: str) -> str | None:
    """The installed version of a distribution, read from its metadata without importing it; None if absent."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def framework_version(name: str) -> str | None:
    """The installed version of backend ``name``'s framework, or None."""
    return distribution_version(BACKENDS[name][2][0])


def environment(name: str) -> dict[str, str | None]:
    """What backend ``name`` runs on in this interpreter: Python, NumPy and its framework's distributions."""
    return {"python": platform.python_version(), "executable": sys.executable,
            **{dist: distribution_version(dist) for dist in ("numpy", *BACKENDS[name][2])}}


#: backend -> (oldest Python, first Python not supported, why), where its framework limits the Python
PYTHONS: dict[str, tuple[tuple[int, int], tuple[int, int] | None, str]] = {
    "tf": ((3, 11), None, "Keras 3.13+ needs Python 3.11 or newer"),
    "jax": ((3, 11), None, "JAX 0.7+ and Flax 0.12+ need Python 3.11 or newer"),
    "mxnet": ((3, 10), (3, 13), "MXNet 1.9.1 needs NumPy 1, which has no wheels for Python 3.13+"),
}


def install_hint(name: str, python: tuple[int, int] = sys.version_info[:2]) -> str:
    """How to install backend ``name``, or why it cannot be installed under ``python``."""
    extra = BACKENDS[name][1]
    low, high, why = PYTHONS.get(name, ((3, 10), None, ""))
    if python < low or (high and python >= high):
        return (f"{why} (this is {python[0]}.{python[1]}): "
                f"install it with pip install -e '.[{extra}]' under such a Python")
    pre = "pip install torch==2.13.0 && " if name == "torch" else ""
    return f"install it with: {pre}pip install -e '.[{extra}]'"


def load(name: str) -> ModuleType:
    """Import backend ``name`` (torch|tf|jax|mxnet) or raise BackendError with an install hint."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")
    module = BACKENDS[name][0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} is not installed ({exc}); {install_hint(name)}") from exc
