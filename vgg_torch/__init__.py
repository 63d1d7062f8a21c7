"""VGG in PyTorch (NCHW). ``import vgg_torch as vgg``; the same names exist in vgg_tf, vgg_jax, vgg_mxnet."""

from vgg_torch import framework  # noqa: F401  (first: see its docstring)
from vgg_torch.distributed import current as current_world, init_distributed
from vgg_torch.data import from_arrays, load_fashion_mnist
from vgg_torch.model import (LAYOUT, VGG, layer_summary, parameter_count, predict,
    print_layer_summary, vgg_block)
from vgg_torch.trainer import MODEL_SUFFIX, evaluate, load, save, train

__all__ = ["current_world", "init_distributed", "LAYOUT", "from_arrays", "load_fashion_mnist", "MODEL_SUFFIX", "VGG", "evaluate", "layer_summary", "load", "parameter_count", "predict",
           "print_layer_summary", "save", "train", "vgg_block"]
