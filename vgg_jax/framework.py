"""The framework hooks of vgg_jax: thread settings and the product that measures the machine's ceiling."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from common.core.precision import PrecisionError

#: the XLA flag that turns off XLA:CPU's YNNPACK fusions (jaxlib 0.8 and later)
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="


def set_threads(count: int) -> None:
    """Nothing to do at run time: XLA's CPU client sizes its pool when it starts (XLA_FLAGS)."""


def device_name(device: str) -> str:
    """The first GPU's kind under ``gpu``, else ``cpu``."""
    gpus = [d for d in jax.devices() if d.platform == "gpu"] if device == "gpu" else []
    return gpus[0].device_kind if gpus else device


def matmul(a):
    """A function computing ``a @ a`` in JAX (jitted), for the machine's float32 ceiling."""
    t, product = jnp.asarray(a), jax.jit(jnp.matmul)
    return lambda: product(t, t).block_until_ready()


def check_bf16() -> None:
    """Refuse bf16 on a CPU where XLA's YNNPACK fusions are on: with jaxlib 0.12.0.1 they turned the small
    VGG's jitted bf16 forward into NaN (eager and float16 were right), and ``XLA_FLAGS`` must say otherwise
    before JAX starts, so the refusal says how."""
    version = tuple(int(p) for p in jax.__version__.split(".")[:2])
    if version >= (0, 8) and jax.default_backend() == "cpu" and NO_YNN not in os.environ.get("XLA_FLAGS", ""):
        raise PrecisionError(f"jax {jax.__version__} bf16 on a CPU: XLA's YNNPACK fusions compute NaN logits for "
                             f"this model; start with XLA_FLAGS={NO_YNN} (they are off then), or use fp32")


__all__ = ["check_bf16", "device_name", "matmul", "set_threads"]
