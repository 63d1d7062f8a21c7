"""Loading a backend by name: the one place a tool turns ``"torch"`` into ``vgg_torch``, with a clear error
that says how to install a missing one."""

from __future__ import annotations

import importlib

from common.core.backends import BackendError, info, install_hint
from common.runtime.contract import Backend


def backend(name: str) -> Backend:
    """Import backend ``name`` (torch|tf|jax|mxnet), or raise BackendError with an install hint."""
    package = info(name).package
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} is not installed ({exc}); {install_hint(name)}") from exc
