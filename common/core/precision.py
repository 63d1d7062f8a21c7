"""The precision axis: what ``fp32``, ``bf16``, ``fp16`` and ``tf32`` mean in every backend, rounding to
each format as the NumPy oracle does it, and the parity tolerances each one earns.

``bf16`` and ``fp16`` are mixed precision as each framework documents it: convolutions and products in the
low format, float32 master weights, optimizer state, loss and softmax. ``fp16`` adds dynamic loss scaling.
``tf32`` is a GPU's TensorFloat-32 for float32 products, on only when asked; ``fp32`` turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.core import tolerances


class PrecisionError(ValueError):
    """A precision that is unknown, or one a backend or machine cannot run."""


class PrecisionWarning(UserWarning):
    """A precision that runs, but slower than float32 or without its speed-up on this machine."""


@dataclass(frozen=True)
class Precision:
    name: str
    compute: str  # the dtype of convolutions and products: float32, bfloat16 or float16
    significand: int  # bits of the compute format's significand, the implicit one included
    loss_scaling: bool = False  # fp16's gradients underflow without it
    gpu_only: bool = False  # tf32: a GPU tensor-core format, nothing on a CPU

    @property
    def mixed(self) -> bool:
        """Low-precision compute over float32 master weights."""
        return self.compute != "float32"

    @property
    def unit_roundoff(self) -> float:
        """Half the gap between 1 and the next number of the format: 2^-significand."""
        return 2.0 ** -self.significand


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", "float32", 24),
    Precision("bf16", "bfloat16", 8),
    Precision("fp16", "float16", 11, loss_scaling=True),
    Precision("tf32", "float32", 11, gpu_only=True),  # float32 storage, a 10-bit mantissa inside products
)}
NAMES = tuple(PRECISIONS)


def get(name: str) -> Precision:
    """The precision called ``name``, or PrecisionError naming what is allowed."""
    return PRECISIONS[check(name)]


def check(name: object) -> str:
    """``name`` if it is a precision, else PrecisionError naming what is allowed."""
    if name not in PRECISIONS:
        raise PrecisionError(f"precision {name!r} is not one of {', '.join(NAMES)}")
    return name


def round_to(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` rounded to the nearest value of the precision's product format (ties to even), as float64:
    what a framework's autocast does to an operand or an output. fp32 rounds to float32."""
    p = get(name)
    x32 = np.asarray(x, np.float64).astype(np.float32)
    if p.significand == 24:
        return x32.astype(np.float64)
    if p.compute == "float16":
        return x32.astype(np.float16).astype(np.float64)
    drop = 24 - p.significand  # low bits of float32's 23-bit fraction that the format has not got
    bits = x32.view(np.uint32).astype(np.uint64)
    half, keep = 1 << (drop - 1), ~((1 << drop) - 1) & 0xFFFFFFFF
    rounded = (bits + (half - 1) + ((bits >> drop) & 1)) & keep  # round half to even
    finite = np.isfinite(x32)
    out = np.where(finite, rounded.astype(np.uint32).view(np.float32), x32)
    return out.astype(np.float64)


def bounds(name: str) -> dict[str, float]:
    """Parity bounds for ``name``: float32's own (common.core.tolerances) for fp32, and for the mixed formats,
    in the spirit of torch's and JAX's test suites (bf16: about 1e-2 for outputs, 1e-1 for gradients):
    logits within 4 units of roundoff u of the format (against the rounding oracle and between backends); a
    2-3 step trajectory (losses, and the trained weights as a relative L2 norm) within 8u; gradients, as a
    relative L2 norm, within 16 bf16 units (6.25e-2) for both formats, since what moves them is the ReLU
    and max-pool choices that rounding flips, which float16's finer grid flips as well (docs/precision.md
    has the measured spread)."""
    p = get(name)
    if not p.mixed:
        return dict(tolerances.TOLERANCES)
    flips = 16 * PRECISIONS["bf16"].unit_roundoff
    low = {"logits": 4 * p.unit_roundoff, "gradients": flips, "trajectory": 8 * p.unit_roundoff}
    low.update({"train logits": low["logits"], "train gradients": low["gradients"],
                "running statistics": low["logits"], "statistics after steps": low["logits"]})
    return low


@dataclass(frozen=True)
class LossScaling:
    """Dynamic loss scaling for fp16, with torch.amp.GradScaler's defaults so all four mean the same."""

    initial: float = 2.0 ** 16
    growth: float = 2.0  # after ``interval`` finite steps in a row
    backoff: float = 0.5  # after a step with an inf or NaN gradient, which is skipped
    interval: int = 2000


LOSS_SCALING = LossScaling()
#: where a checkpoint keeps fp16's scale and its count of finite steps, in every backend
LOSS_SCALE_KEYS = ("optimizer.loss_scale", "optimizer.loss_scale_steps")


def gradient_scale(name: str) -> float:
    """What the loss is multiplied by (and the gradients divided by) outside a training step, where no
    dynamic scale is kept: fp16's initial scale, so gradients that would underflow in float16 do not; 1."""
    return LOSS_SCALING.initial if get(name).loss_scaling else 1.0


def next_loss_scale(scale, finite_steps, finite, where):
    """GradScaler.update's rule for the steps written by hand (vgg_tf, vgg_jax), in the framework's own ops
    (``where`` is tf.where or jnp.where) so it runs inside their compiled step: ``(scale, finite_steps)``
    after a step whose unscaled gradients were all ``finite`` (that step applied) or not (that step skipped)."""
    rule = LOSS_SCALING
    grow = finite_steps + 1 >= rule.interval
    zero = finite_steps * 0  # of the count's own dtype: TensorFlow does not promote a Python 0
    scale = where(finite, where(grow, scale * rule.growth, scale), scale * rule.backoff)
    return scale, where(finite, where(grow, zero, finite_steps + 1), zero)
