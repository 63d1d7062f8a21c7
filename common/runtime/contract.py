"""The backend contract: what every ``vgg_<fw>`` package provides, under these names, to its users and to
the tools. Each backend's ``__init__`` exports exactly these names (tests/test_contract.py checks all four),
and the tools reach a backend only through them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common.runtime.distributed import World
from common.runtime.history import History
from common.runtime.training import Engine as EngineProtocol

Gradients = dict[str, np.ndarray]


class Backend(Protocol):
    """One framework's VGG, NCHW or NHWC as the framework prefers; model and tensors are its own types."""

    NAME: str  # the registry's name: torch, tf, jax, mxnet (common.core.backends)
    LAYOUT: str  # "NCHW" or "NHWC"
    MODEL_SUFFIX: str  # of the file ``save`` writes

    # the network (common.core.config.ModelConfig says what builds it; torchvision's builders); VGG and Engine
    # are read-only members, so that a backend's own class satisfies them (common/tools/contract_types.py)
    @property
    def VGG(self) -> type: ...
    vgg_block: Callable[..., Any]
    vgg11: Callable[..., Any]
    vgg11_bn: Callable[..., Any]
    vgg13: Callable[..., Any]
    vgg13_bn: Callable[..., Any]
    vgg16: Callable[..., Any]
    vgg16_bn: Callable[..., Any]
    vgg19: Callable[..., Any]
    vgg19_bn: Callable[..., Any]
    def layer_summary(self, model: Any, input_shape: tuple[int, ...], verbose: bool = False) -> list: ...
    def print_layer_summary(self, model: Any, input_shape: tuple[int, ...]) -> None: ...
    def parameter_count(self, model: Any) -> int: ...
    def predict(self, model: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray: ...

    # data in the framework's tensors
    def load_fashion_mnist(self, batch_size: int, **options: Any) -> Any: ...
    def from_arrays(self, *arrays: np.ndarray, batch_size: int, **options: Any) -> Any: ...
    def to_tensor(self, images: np.ndarray, labels: np.ndarray) -> tuple[Any, Any]: ...

    # training (the loop is common.runtime.training's; Engine is the framework's step)
    @property
    def Engine(self) -> Callable[..., EngineProtocol]: ...
    def train(self, model: Any, data: Any, **recipe: Any) -> History: ...
    def evaluate(self, model: Any, data: Any, test_flip: bool = False) -> float: ...
    def save(self, model: Any, path: str | Path) -> Path: ...
    def load(self, path: str | Path) -> Any: ...

    # canonical weights and what parity compares; gradients leave the model in eval mode, as predict does
    def export_weights(self, model: Any) -> dict[str, np.ndarray]: ...
    def import_weights(self, model: Any, weights: dict[str, np.ndarray]) -> None: ...
    def save_weights(self, model: Any, path: str | Path) -> Path: ...
    def load_weights(self, model: Any, path: str | Path) -> None: ...
    def loss_gradients(self, model: Any, images: np.ndarray, labels: np.ndarray,
                       label_smoothing: float = 0.0) -> Gradients: ...
    def training_outputs(self, model: Any, images: np.ndarray, labels: np.ndarray,
                         label_smoothing: float = 0.0) -> tuple[np.ndarray, Gradients]: ...

    # serving
    def export(self, model: Any, path: str | Path, format: str = "native", images: np.ndarray | None = None) -> Any: ...
    def load_exported(self, path: str | Path,
                      trust_model: bool = False) -> tuple[Callable[[np.ndarray], np.ndarray], dict]: ...

    # distributed set-up and the framework hooks the tools need
    def init_distributed(self, devices: int = 1, device: str = "cpu") -> World: ...
    def current_world(self) -> World: ...
    def set_threads(self, count: int) -> None: ...  # the framework's own thread pools, before any work
    def matmul(self, a: np.ndarray, device: str = "cpu",  # a @ a to completion on the device, in the
               precision: str = "fp32") -> Callable[[], Any]: ...  # precision's product format: the ceiling
    def device_name(self, device: str) -> str: ...  # what "cpu" or "gpu" is here, as reports name it
    def kernels(self, device: str = "cpu") -> str: ...  # which kernels compute the convolutions, as reports say
    def communication_timer(self, engine: Any) -> Callable[[], float | None]: ...  # ms per step, if reported
    # (forward(images, labels), step(images, labels, lr)): the engine's training-mode forward and loss, and its
    # full step, each run to completion with the framework's own synchronisation (vgg compare's step split)
    def step_split(self, engine: Any) -> tuple[Callable[..., float], Callable[..., tuple[float, int]]]: ...


#: every name the contract holds: the attributes above, then the members written as functions
NAMES: tuple[str, ...] = tuple(dict.fromkeys([*Backend.__annotations__,
                                              *(n for n in vars(Backend) if not n.startswith("_"))]))
