"""Backend parametrisation: a missing framework skips locally, fails under VGG_REQUIRE_ALL_BACKENDS=1."""

from __future__ import annotations

import os

import pytest

from common import backends

REQUIRE_ALL = os.environ.get("VGG_REQUIRE_ALL_BACKENDS") == "1"


def load_backend(name: str):
    try:
        return backends.load(name)
    except backends.BackendError as exc:
        if REQUIRE_ALL:
            pytest.fail(f"VGG_REQUIRE_ALL_BACKENDS=1 but {exc}")
        pytest.skip(str(exc))


@pytest.fixture(params=backends.NAMES)
def backend(request):
    """Each backend module in turn (vgg_torch, vgg_tf, vgg_jax, vgg_mxnet)."""
    return load_backend(request.param)


@pytest.fixture
def all_backends():
    """Every backend module, as a dict name -> module."""
    return {name: load_backend(name) for name in backends.NAMES}
