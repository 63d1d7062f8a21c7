"""The one place MXNet is imported: NumPy alias and thread settings must come before ``import mxnet``."""

from __future__ import annotations

import os
import warnings

import numpy

with warnings.catch_warnings():  # NumPy 1.24-1.26 warn on merely asking for numpy.bool
    warnings.simplefilter("ignore", FutureWarning)
    if not hasattr(numpy, "bool"):  # MXNet 1.9.1 uses numpy.bool, which NumPy 1.24+ removed
        numpy.bool = numpy.bool_  # type: ignore[attr-defined]  # gone from NumPy 1.24-1.26
# MXNet's OpenMP pool uses one core unless told otherwise, and reads this only at import.
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
# A dist_sync worker on MXNet's threaded engine sometimes trains on wrong gradients (vgg parity --workers 2
# shows it; README, Data-parallel training, has the counts); on its synchronous engine it did not, so every
# worker of a distributed job uses that one unless the user chose an engine.
if os.environ.get("DMLC_ROLE") == "worker" and int(os.environ.get("DMLC_NUM_WORKER", "1")) > 1:
    os.environ.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")

import mxnet as mx  # noqa: E402
from mxnet import gluon, npx  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

from common.core.precision import PrecisionError  # noqa: E402

npx.set_np()  # NumPy-compatible arrays (mxnet.np.ndarray) throughout Gluon



def set_threads(count: int) -> None:
    """Nothing to do at run time: MXNet's OpenMP pool reads OMP_NUM_THREADS at import (set above)."""


def device_name(device: str) -> str:
    """``cpu``: MXNet's pip wheel has no GPU build (``--device gpu`` is refused before this is asked)."""
    return device


def kernels(device: str = "cpu") -> str:
    """Which kernels compute the convolutions here (oneDNN's where the build has it, unless
    MXNET_MKLDNN_ENABLED=0): a line for reports."""
    built = mx.runtime.Features().is_enabled("MKLDNN")
    if built and os.environ.get("MXNET_MKLDNN_ENABLED", "1") != "0":
        return "oneDNN convolutions, OpenBLAS products"
    return "MXNet's own convolutions, OpenBLAS products" + (" (MXNET_MKLDNN_ENABLED=0)" if built else "")


def matmul(a, device: str = "cpu", precision: str = "fp32"):
    """A function computing ``a @ a`` to completion in MXNet, for the machine's float32 ceiling (MXNet runs
    fp32 on a CPU only here: other requests are a PrecisionError)."""
    if (device, precision) != ("cpu", "fp32"):
        raise PrecisionError(f"mxnet runs float32 products on a CPU only, not {precision} on {device}")
    t = mx.np.array(a)
    return lambda: mx.np.dot(t, t).wait_to_read()


__all__ = ["device_name", "gluon", "kernels", "matmul", "mx", "nn", "npx", "set_threads"]
