"""VGG in JAX/Flax NNX (NHWC). ``import vgg_jax as vgg``; the same names exist in the other backends."""

from vgg_jax.distributed import current as current_world, init_distributed
from vgg_jax.data import from_arrays, load_fashion_mnist
from vgg_jax.model import (LAYOUT, VGG, layer_summary, parameter_count, predict, print_layer_summary,
    vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn, vgg_block)
from vgg_jax.trainer import MODEL_SUFFIX, evaluate, load, save, train
from vgg_jax.weights import export_weights, import_weights, load_weights, save_weights
from vgg_jax.export import export, load_exported

__all__ = ["LAYOUT", "MODEL_SUFFIX", "VGG", "current_world", "evaluate", "export", "export_weights",
           "from_arrays", "import_weights", "init_distributed", "layer_summary", "load", "load_exported",
           "load_fashion_mnist", "load_weights", "parameter_count", "predict", "print_layer_summary", "save",
           "save_weights", "train", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
           "vgg19_bn", "vgg_block"]
