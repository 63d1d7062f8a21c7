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

__all__ = ["keras", "tf"]
