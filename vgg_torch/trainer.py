"""Training, evaluation and native save/load for the PyTorch VGG; the loop itself is common.runtime.training.fit."""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from common.core import atomic, backends, precision
from common.core.config import ModelConfig
from common.runtime import distributed, training
from common.runtime.distributed import World
from vgg_torch import distributed as dist
from vgg_torch.losses import cross_entropy
from vgg_torch.model import NAME, VGG, computing

MODEL_SUFFIX = backends.BACKENDS[NAME].trained_suffix


class Engine:
    """One SGD step per batch in eager PyTorch (CPU ops run synchronously, so ``.item()`` costs nothing).

    With several processes the model runs wrapped in ``DistributedDataParallel``, which averages the
    gradients of the equal per-process shards during ``backward``: the global batch's mean gradient."""

    def __init__(self, model: VGG, recipe: training.Recipe, world: World | None = None) -> None:
        self.model = model
        self.world = world or dist.current()
        self.device = next(model.parameters()).device
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids) \
            if self.world.processes > 1 else model
        self.label_smoothing, self.test_flip = recipe.label_smoothing, recipe.test_flip
        self.params = dict(model.named_parameters())  # checkpoint keys by parameter name, as in every backend
        self.optimizer = torch.optim.SGD(self.params.values(), lr=recipe.lr, momentum=recipe.momentum,
                                         weight_decay=recipe.weight_decay)
        # fp16's dynamic loss scaling: torch's own GradScaler (scale, unscale, skip a non-finite step, grow
        # and shrink); a no-op for every other precision
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=precision.get(model.config.precision).loss_scaling)

    def reseed(self, seed: int) -> None:
        torch.manual_seed(distributed.worker_seed(seed, self.world.rank))  # dropout: the global generator

    def step(self, images: torch.Tensor, labels: torch.Tensor, lr: float) -> tuple[float, int]:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        with computing(self.model):
            logits = self.net(images)
            loss = cross_entropy(logits, labels, self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        correct = int((logits.argmax(1) == labels).sum())
        if self.world.processes == 1:
            return loss.item(), correct
        loss_sum, correct_sum, n = dist.all_sum([loss.item() * len(labels), correct, len(labels)])
        return loss_sum / n, int(correct_sum)

    def evaluate(self, batches) -> float:
        return evaluate(self.model, batches, test_flip=self.test_flip)

    def state(self) -> dict[str, np.ndarray]:
        arrays = {f"model.{k}": v.cpu().numpy() for k, v in self.model.state_dict().items()}
        for name, p in self.params.items():
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                arrays[f"optimizer.{name}.momentum"] = buf.cpu().numpy()
        if self.scaler.is_enabled():
            kept = self.scaler.state_dict()
            for key, value in zip(precision.LOSS_SCALE_KEYS, (kept["scale"], kept["_growth_tracker"])):
                arrays[key] = np.asarray(value)
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict({k[6:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("model.")})
        for i, (name, p) in enumerate(self.params.items()):
            # a checkpoint written before the buffers were keyed by name has them by index
            buf = arrays.get(f"optimizer.{name}.momentum", arrays.get(f"optimizer.{i}.momentum_buffer"))
            if buf is not None:
                self.optimizer.state[p]["momentum_buffer"] = torch.from_numpy(buf).to(self.device)
        if self.scaler.is_enabled() and precision.LOSS_SCALE_KEYS[0] in arrays:
            scale, steps = (arrays[key] for key in precision.LOSS_SCALE_KEYS)
            self.scaler.load_state_dict({**self.scaler.state_dict(), "scale": float(scale),
                                         "_growth_tracker": int(steps)})


def step_split(engine: Engine) -> tuple[Callable[..., float], Callable[..., tuple[float, int]]]:
    """The step split's two timed calls, one process: the engine's training-mode forward and loss (autograd
    recording, as in the step) and its full step; ``.item()`` waits for either to finish, on a GPU too."""
    def forward(images: torch.Tensor, labels: torch.Tensor) -> float:
        engine.model.train()
        with computing(engine.model):
            logits = engine.model(images.to(engine.device, non_blocking=True))
            return cross_entropy(logits, labels.to(engine.device, non_blocking=True), engine.label_smoothing).item()
    return forward, engine.step


train = partial(training.train, NAME, Engine)
train.__doc__ = "Train a VGG on load_fashion_mnist batches with minibatch SGD; arguments as runtime.training.train."


def evaluate(model: VGG, data, test_flip: bool = False) -> float:
    """Test accuracy with dropout off; ``data`` is a ``load_fashion_mnist`` result or any batches. With
    ``test_flip`` each image's logits are the mean of its own and its mirror image's."""
    model.eval()
    where = next(model.parameters()).device

    def logits(x: torch.Tensor) -> torch.Tensor:
        x = x.to(where)
        return (model(x).float() + model(torch.flip(x, dims=[3])).float()) / 2 if test_flip else model(x)

    with torch.inference_mode(), computing(model):
        return training.accuracy(training.test_batches(data),
                                 lambda x, y: (logits(x).argmax(1) == y.to(where)).sum().item())


def save(model: VGG, path: str | Path) -> Path:
    """Save config and ``state_dict`` with ``torch.save`` (atomically)."""
    buf = io.BytesIO()
    torch.save({"config": model.config.to_dict(), "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}},
               buf)
    return atomic.write_bytes(path, buf.getvalue())


def load(path: str | Path) -> VGG:
    """Rebuild a model written by :func:`save`."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = VGG(ModelConfig.from_file(blob["config"], path))
    model.load_state_dict(blob["state_dict"])  # copied onto the model's device
    return model
