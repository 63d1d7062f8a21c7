"""VGG in MXNet Gluon (NCHW). ``import vgg_mxnet as vgg``; the same names exist in the other backends."""

from vgg_mxnet.distributed import current as current_world, init_distributed
from vgg_mxnet.data import from_arrays, load_fashion_mnist
from vgg_mxnet.model import (LAYOUT, VGG, layer_summary, parameter_count, predict,
    print_layer_summary, vgg_block)
from vgg_mxnet.trainer import MODEL_SUFFIX, evaluate, load, save, train

__all__ = ["current_world", "init_distributed", "LAYOUT", "from_arrays", "load_fashion_mnist", "MODEL_SUFFIX", "VGG", "evaluate", "layer_summary", "load", "parameter_count", "predict",
           "print_layer_summary", "save", "train", "vgg_block"]
