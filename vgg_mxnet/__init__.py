"""VGG in MXNet Gluon (NCHW). ``import vgg_mxnet as vgg``; the same names exist in the other backends."""

from vgg_mxnet.model import (LAYOUT, VGG, layer_summary, parameter_count, predict,
    print_layer_summary, vgg_block)

__all__ = ["LAYOUT", "VGG", "layer_summary", "parameter_count", "predict", "print_layer_summary", "vgg_block"]
