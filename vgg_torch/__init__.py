"""VGG in PyTorch (NCHW). ``import vgg_torch as vgg``; the same names exist in vgg_tf, vgg_jax, vgg_mxnet."""

from vgg_torch.model import LAYOUT, VGG, layer_summary, parameter_count, print_layer_summary, vgg_block

__all__ = ["LAYOUT", "VGG", "layer_summary", "parameter_count", "print_layer_summary", "vgg_block"]
