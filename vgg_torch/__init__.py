"""VGG in PyTorch (NCHW). ``import vgg_torch as vgg`` gives the backend contract's names
(common/runtime/contract.py), which mean the same in vgg_torch, vgg_tf, vgg_jax and vgg_mxnet."""

from vgg_torch import framework  # first: see its docstring

# isort: split
from typing import TYPE_CHECKING

from common.runtime import contract
from vgg_torch.data import from_arrays, load_fashion_mnist, to_tensor
from vgg_torch.distributed import communication_timer, current as current_world, init_distributed
from vgg_torch.export import export, load_exported
from vgg_torch.framework import device_name, kernels, matmul, set_threads
from vgg_torch.model import (
    LAYOUT,
    NAME,
    VGG,
    layer_summary,
    parameter_count,
    predict,
    print_layer_summary,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
    vgg_block,
)
from vgg_torch.trainer import MODEL_SUFFIX, Engine, evaluate, load, save, step_split, train
from vgg_torch.weights import (
    export_weights,
    import_weights,
    load_weights,
    loss_gradients,
    save_weights,
    training_outputs,
)

if not TYPE_CHECKING:  # mypy, not knowing this list, would export nothing: it sees the imports above instead
    __all__ = list(contract.NAMES)  # exactly the contract's names, listed once there
