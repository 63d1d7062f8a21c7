"""VGG in JAX/Flax NNX (NHWC). ``import vgg_jax as vgg``; the same names exist in the other backends."""

from vgg_jax.distributed import current as current_world, init_distributed
from vgg_jax.data import from_arrays, load_fashion_mnist
from vgg_jax.trainer import MODEL_SUFFIX, evaluate, load, save, train
from vgg_jax.model import (LAYOUT, VGG, layer_summary, parameter_count, predict,
    print_layer_summary, vgg_block)

__all__ = ["current_world", "init_distributed", "LAYOUT", "MODEL_SUFFIX", "from_arrays", "load_fashion_mnist", "VGG", "evaluate", "load", "save", "train", "layer_summary", "parameter_count", "predict", "print_layer_summary", "vgg_block"]
