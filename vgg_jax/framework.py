"""The framework hooks of vgg_jax: thread settings and the product that measures the machine's ceiling."""

from __future__ import annotations

import functools

from vgg_jax.xla_kernels import (  # isort: skip  (XLA_FLAGS first)
    ENV_VAR,
    NO_YNN,
    kernels as chosen_kernels,
    ynn_convolutions,
)

import jax
import jax.numpy as jnp

from common.core import precision as precisions
from common.core.precision import PrecisionError


def set_threads(count: int) -> None:
    """Nothing to do at run time: XLA's CPU client sizes its pool when it starts (XLA_FLAGS)."""


def device_name(device: str) -> str:
    """The first GPU's kind under ``gpu``, else ``cpu``."""
    gpus = [d for d in jax.devices() if d.platform == "gpu"] if device == "gpu" else []
    return gpus[0].device_kind if gpus else device


def kernels(device: str = "cpu") -> str:
    """Which XLA kernels compute the convolutions and products here, and why (vgg_jax.kernels chose them by
    jaxlib version before XLA started): a line for reports."""
    return f"XLA:GPU ({jax.default_backend()})" if device == "gpu" else chosen_kernels()


def matmul(a, device: str = "cpu", precision: str = "fp32"):
    """A function computing ``a @ a`` to completion in JAX (jitted) on ``device`` in ``precision``'s product
    format (float32 products in full float32 unless tf32), for the machine's product ceiling in that precision."""
    p = precisions.get(precision)
    t = jax.device_put(jnp.asarray(a, dtype=p.compute), jax.devices(device)[0])
    product = jax.jit(functools.partial(jnp.matmul, precision="tensorfloat32" if p.name == "tf32" else "highest"))
    return lambda: product(t, t).block_until_ready()


def check_bf16() -> None:
    """Refuse bf16 on a CPU where XLA's YNNPACK convolutions are on (jaxlib's own default,
    ``VGG_JAX_KERNELS=jaxlib``): with jaxlib 0.12 they turn the small VGG's jitted bf16 forward into NaN (its
    products, eager mode and float16 are right), and ``XLA_FLAGS`` must say otherwise before JAX starts, so the
    refusal says how."""
    version = tuple(int(p) for p in jax.__version__.split(".")[:2])
    if version >= (0, 8) and jax.default_backend() == "cpu" and ynn_convolutions():
        raise PrecisionError(f"jax {jax.__version__} bf16 on a CPU: XLA's YNNPACK convolutions compute NaN logits "
                             f"for this model; start with {ENV_VAR}=ynn-dots (the default), onednn or eigen, or "
                             f"XLA_FLAGS={NO_YNN} (YNNPACK off), or use fp32")


__all__ = ["check_bf16", "device_name", "kernels", "matmul", "set_threads"]
