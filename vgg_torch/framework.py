"""Imported first by vgg_torch: settings torch needs before its import, its first optimizer or compile.

torch's CPU allocator has no cache: every activation of 32 MiB or more is a fresh mmap, faulted in 4 KiB
pages on every step. THP_MEM_ALLOC_ENABLE (read when torch loads; the user's value wins) makes it align
buffers of 2 MiB or more and ask for transparent huge pages: one fault per 2 MiB, not per 4 KiB (README,
Results).

PyPI's torch (a CUDA build) brings Triton, the GPU kernel compiler of torch.compile, and imports it with
torch._dynamo, which the first ``torch.optim`` optimizer loads. Triton links its own LLVM, and loading it
into a process that already holds TensorFlow's aborts the process ("CommandLine Error: Option ...
registered more than once", pytorch/pytorch#90166). Without a CUDA device Triton has nothing to compile
(torch.compile's CPU code is C++), so torch is told it is absent; with a GPU it stays.
"""

from __future__ import annotations

import os
import sys
import warnings

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402

from common.core import precision as precisions  # noqa: E402

with warnings.catch_warnings():  # after TensorFlow's import, PyPI's torch warns that CUDA could not load
    warnings.simplefilter("ignore", UserWarning)
    has_gpu = torch.cuda.is_available()
if "triton" not in sys.modules and not has_gpu:
    sys.modules["triton"] = None  # type: ignore[assignment]  # `import triton` raises ImportError: torch takes it as not installed


def set_threads(count: int) -> None:
    """torch's intra-op pool (OMP_NUM_THREADS sets the same at start)."""
    torch.set_num_threads(count)


def device_name(device: str) -> str:
    """The GPU's name under ``gpu`` (the current CUDA device), else ``cpu``."""
    return torch.cuda.get_device_name() if device == "gpu" else "cpu"


def kernels(device: str = "cpu") -> str:
    """Which kernels compute the convolutions here (oneDNN's or ATen's own on a CPU, and the ISA ATen
    dispatches to): a line for reports."""
    if device == "gpu":
        return f"cuDNN {torch.backends.cudnn.version()} convolutions, cuBLAS products"
    onednn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    return (f"{'oneDNN' if onednn else 'ATen'} convolutions, {torch.backends.cpu.get_cpu_capability()} "
            "kernels elsewhere")


def set_tf32(enabled: bool) -> None:
    """TensorFloat-32 products and convolutions on a GPU: on only for tf32, so fp32 means float32."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled


def matmul(a, device: str = "cpu", precision: str = "fp32"):
    """A function computing ``a @ a`` to completion in torch on ``device`` in ``precision``'s product format
    (TensorFloat-32 only for tf32), for the machine's product ceiling in that precision."""
    p = precisions.get(precision)
    set_tf32(p.name == "tf32")
    t = torch.from_numpy(a).to("cuda" if device == "gpu" else "cpu", getattr(torch, p.compute))

    def product() -> torch.Tensor:
        out = t @ t
        if device == "gpu":
            torch.cuda.synchronize()
        return out
    return product


__all__ = ["device_name", "kernels", "matmul", "set_tf32", "set_threads", "torch"]
