"""Every backend as a :class:`common.runtime.contract.Backend`, for mypy only (``.ci/lint``): a backend whose
names or signatures drift from the contract fails the type check, where tests/test_contract.py checks the
names alone. Nothing imports this module, and importing it loads no framework."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import vgg_jax
    import vgg_mxnet
    import vgg_tf
    import vgg_torch
    from common.runtime.contract import Backend

    TORCH: Backend = vgg_torch
    TF: Backend = vgg_tf
    JAX: Backend = vgg_jax
    MXNET: Backend = vgg_mxnet
