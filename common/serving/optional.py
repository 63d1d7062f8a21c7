"""Optional dependencies of serving (the ``export`` extra), imported with an error that says what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from common.core.backends import BackendError

EXTRA = "export"


def require(module: str, purpose: str, extra: str = EXTRA) -> ModuleType:
    """Import ``module`` or raise BackendError naming ``purpose`` and the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(f"{purpose} needs {module.split('.')[0]}, which is not installed ({exc}); "
                           f"install it with: pip install -e '.[{extra}]'") from None
