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

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

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


def matmul(a):
    """A function computing ``a @ a`` in TensorFlow, for the machine's float32 ceiling."""
    t = tf.constant(a)
    return lambda: tf.linalg.matmul(t, t).numpy()


__all__ = ["device_name", "keras", "matmul", "set_threads", "tf"]
