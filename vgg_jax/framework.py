"""The framework hooks of vgg_jax: thread settings and the product that measures the machine's ceiling."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def set_threads(count: int) -> None:
    """Nothing to do at run time: XLA's CPU client sizes its pool when it starts (XLA_FLAGS)."""


def matmul(a):
    """A function computing ``a @ a`` in JAX (jitted), for the machine's float32 ceiling."""
    t, product = jnp.asarray(a), jax.jit(jnp.matmul)
    return lambda: product(t, t).block_until_ready()


__all__ = ["matmul", "set_threads"]
