"""The one place TensorFlow and Keras are imported: Keras 3 must run on TensorFlow here."""

from __future__ import annotations

import os
import sys

if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "tensorflow"  # Keras 3 follows KERAS_BACKEND; vgg_tf needs TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's start-up chatter off the terminal
# TensorFlow turns its oneDNN custom ops (oneDNN convolutions, matmuls, pooling) on by default only on newer
# CPUs; on an AVX2 machine its convolutions otherwise run through Eigen, about 2x slower (README, Results).
# Where TensorFlow already turns them on this changes nothing. Read at import; the user's value wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import contextlib  # noqa: E402
import re  # noqa: E402

from common.core import precision as precisions  # noqa: E402
from common.runtime import native_logs  # noqa: E402

#: what TensorFlow logs at start-up on a CPU machine before it reads TF_CPP_MIN_LOG_LEVEL
_CHATTER = re.compile(r"absl::InitializeLog|port\.cc:\d+\] oneDNN custom operations|cudart_stub\.cc|"
                      r"cuda_platform\.cc:\d+\] failed call to cuInit|cpu_feature_guard\.cc|"
                      r"Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc|TF-TRT Warning")
with native_logs.without(_CHATTER) if os.environ["TF_CPP_MIN_LOG_LEVEL"] >= "2" else contextlib.nullcontext():
    import keras
    import tensorflow as tf
    tf.config.list_physical_devices("GPU")  # CUDA's probe, here: it logs an error where there is no GPU

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"keras was imported with the {keras.backend.backend()!r} backend before vgg_tf; "
        "import vgg_tf first or set KERAS_BACKEND=tensorflow")



def set_threads(count: int) -> None:
    """TensorFlow's pools: ``count`` threads inside an op, one between ops (set before any op runs)."""
    tf.config.threading.set_intra_op_parallelism_threads(count)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def device_name(device: str) -> str:
    """The first GPU's name under ``gpu``, else ``cpu``."""
    if device != "gpu":
        return "cpu"
    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu") if gpus else "gpu"


def kernels(device: str = "cpu") -> str:
    """Which kernels compute the convolutions here (oneDNN's unless TF_ENABLE_ONEDNN_OPTS=0, then Eigen's):
    a line for reports."""
    if device == "gpu":
        return "cuDNN convolutions, cuBLAS products"
    return "oneDNN convolutions and products" if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0" \
        else "Eigen convolutions and products (TF_ENABLE_ONEDNN_OPTS=0)"


def set_tf32(enabled: bool) -> None:
    """TensorFloat-32 products on a GPU: on only for tf32 (TensorFlow turns them on by default)."""
    tf.config.experimental.enable_tensor_float_32_execution(enabled)


def matmul(a, device: str = "cpu", precision: str = "fp32"):
    """A function computing ``a @ a`` to completion in TensorFlow on ``device`` in ``precision``'s product
    format (TensorFloat-32 only for tf32), for the machine's product ceiling in that precision; reading one
    element back waits for the product without timing a copy of all of it."""
    p = precisions.get(precision)
    set_tf32(p.name == "tf32")
    where = "/GPU:0" if device == "gpu" else "/CPU:0"
    with tf.device(where):
        t = tf.cast(tf.constant(a), p.compute)

    def product():
        with tf.device(where):
            return tf.linalg.matmul(t, t)[0, 0].numpy()
    return product


__all__ = ["device_name", "keras", "kernels", "matmul", "set_tf32", "set_threads", "tf"]
