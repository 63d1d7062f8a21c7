"""The four backends by name, importable with a clear error that says how to install a missing one."""

from __future__ import annotations

import importlib
from types import ModuleType

#: backend name -> (module, the pip extra that installs its framework)
BACKENDS: dict[str, tuple[str, str]] = {
    "torch": ("vgg_torch", "torch"),
    "tf": ("vgg_tf", "tf"),
    "jax": ("vgg_jax", "jax"),
    "mxnet": ("vgg_mxnet", "mxnet"),
}
NAMES = tuple(BACKENDS)


class BackendError(RuntimeError):
    """A backend that is unknown, not installed or broken."""


def install_hint(name: str) -> str:
    extra = BACKENDS[name][1]
    pre = "pip install torch==2.13.0 && " if name == "torch" else ""
    return f"{pre}pip install -e '.[{extra}]'"


def load(name: str) -> ModuleType:
    """Import backend ``name`` (torch|tf|jax|mxnet) or raise BackendError with an install hint."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")
    module = BACKENDS[name][0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} is not installed ({exc}); install it with: {install_hint(name)}") from exc
