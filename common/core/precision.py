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
    if name not in PRECISIONS:
        raise PrecisionError(f"precision {name!r} is not one of {', '.join(NAMES)}")
    return PRECISIONS[name]


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
    """Parity bounds for ``name``: float32's own (common.core.tolerances) for fp32, and for the mixed formats
    a multiple of the unit roundoff u, as torch's and JAX's test suites bound bf16 (about 1e-2 for outputs,
    1e-1 for gradients, u = 3.9e-3): logits 4u against the rounding oracle and between backends, gradients
    as a relative L2 norm (a ReLU or a max-pool choice that rounding flips moves one element a lot and the
    norm little) 8u, and a 3-step trajectory 16u."""
    p = get(name)
    if not p.mixed:
        return dict(tolerances.TOLERANCES)
    u = p.unit_roundoff
    return {"logits": 4 * u, "gradients": 8 * u, "trajectory": 16 * u}
