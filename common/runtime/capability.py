"""Whether this machine runs a precision the way its name promises, per backend: a precision a backend
cannot run is refused, one it runs slowly or without a speed-up is said in one line, never hidden."""

from __future__ import annotations

import warnings

from common.core import backends, precision
from common.core.precision import PrecisionError, PrecisionWarning
from common.runtime.machine import cpu_flags

#: CPU flags of native bf16 products in oneDNN: AVX-512 BF16 (Zen 4, Cooper Lake and later) or AMX
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def check(backend: str, name: str, device: str = "cpu", flags: set[str] | None = None) -> str | None:
    """Refuse (PrecisionError) what ``backend`` cannot run at precision ``name`` on ``device``; return one
    line to print where it runs slower than float32 or computes in float32 anyway; None where it is native."""
    p, info = precision.get(name), backends.BACKENDS[backend]
    if device == "gpu":  # a backend without a GPU build, or a machine without a GPU: init_distributed refuses
        return None
    if p.gpu_only:
        raise PrecisionError(f"precision {name!r} is the GPU's TensorFloat-32 and means nothing on a CPU: use "
                             "fp32 here, or tf32 with --device gpu")
    if not p.mixed:
        return None
    if info.cpu_mixed == "none":
        raise PrecisionError(f"{backend} runs fp32 only: {info.mixed_why}; choose fp32, or torch, tf or jax "
                             f"for {name}")
    if info.cpu_mixed == "upcast":
        return (f"{backend} {name} on a CPU: XLA computes {p.compute} convolutions in float32 and rounds the "
                "result, so the numbers are the format's but expect no speed-up over fp32")
    flags = cpu_flags() if flags is None else flags
    if name == "fp16":
        return (f"{backend} fp16 on a CPU: oneDNN has no float16 kernels here, so products are emulated "
                "(correct, with loss scaling, but far slower than fp32); fp16 is for GPUs")
    if not any(f in flags for f in BF16_FLAGS):
        return (f"{backend} bf16 on a CPU without AVX-512 BF16 or AMX instructions: oneDNN has no bfloat16 "
                "kernels here, so products are emulated, often 10-100x slower than fp32")
    return None


def announce(backend: str, name: str, device: str = "cpu") -> None:
    """:func:`check` for a model being built: refuse, or warn once per process and message
    (:class:`~common.core.precision.PrecisionWarning`; the CLI prints it as one line)."""
    note = check(backend, name, device)
    if note:
        warnings.warn(note, PrecisionWarning, stacklevel=3)
