"""Helpers the tests share: which backends this environment tests and how a missing one is treated, and
where the real Fashion-MNIST files are.

VGG_EXPECT_ABSENT=mxnet (set by `.ci/test` in the `modern` environment, which cannot hold MXNet) names backends
whose absence is expected: when not installed, their tests are not collected and the run says so once, at its end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.core import backends
from common.data import fashion_mnist
from common.tools import loading

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_ALL = os.environ.get("VGG_REQUIRE_ALL_BACKENDS") == "1"
EXPECT_ABSENT = [name for name in os.environ.get("VGG_EXPECT_ABSENT", "").split(",") if name]
for _name in EXPECT_ABSENT:
    if _name not in backends.NAMES:
        raise pytest.UsageError(f"VGG_EXPECT_ABSENT={_name!r}: not a backend; choose from {','.join(backends.NAMES)}")
ABSENT = tuple(name for name in EXPECT_ABSENT if backends.framework_version(name) is None)
#: the backends this environment tests
ACTIVE = tuple(name for name in backends.NAMES if name not in ABSENT)
#: the backend every other one is compared with where a test compares two (gradients and SGD steps, which
#: the NumPy oracle does not compute): torch, installed in every environment
REFERENCE = "torch"
#: the backends compared with the reference: a test of two backends has no case for the reference alone
COMPARED = tuple(name for name in ACTIVE if name != REFERENCE)


def load_backend(name: str):
    """Backend ``name``; skips the test when it is missing, or fails it under VGG_REQUIRE_ALL_BACKENDS=1."""
    try:
        return loading.backend(name)
    except backends.BackendError as exc:
        if REQUIRE_ALL:
            pytest.fail(f"VGG_REQUIRE_ALL_BACKENDS=1 but {exc}")
        pytest.skip(str(exc))


def with_reference(backend, reference) -> dict:
    """``{name: module}`` of ``backend`` and the reference, for the parity functions (one entry when equal)."""
    return {vgg.NAME: vgg for vgg in (reference, backend)}


def _real_data_dir() -> Path | None:
    """The first folder holding all four real files, where the loader looks (``$VGG_DATA_DIR``, the user
    cache, Debian's package), then the workplace's copy beside the checkout."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
    for folder in [path for _, path in fashion_mnist.search_dirs()] + [shared]:
        if all((folder / f"{name}.gz").is_file() or (folder / name).is_file() for name in fashion_mnist.FILES):
            return folder
    return None


#: where the real Fashion-MNIST files are, looked up once before any test changes the environment
REAL_DATA = _real_data_dir()
NO_REAL_DATA = ("the real Fashion-MNIST files are in none of the loader's places ($VGG_DATA_DIR, the user cache, "
                f"{fashion_mnist.SYSTEM_DIR}): {fashion_mnist.INSTALL_HINT}")
