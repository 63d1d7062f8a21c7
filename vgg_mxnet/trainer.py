"""Training, evaluation and native save/load for the MXNet Gluon VGG; the loop itself is common.runtime.training.fit."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from common.core import atomic, backends
from common.core.config import ModelConfig
from common.runtime import distributed, training
from common.runtime.distributed import World
from vgg_mxnet import distributed as dist
from vgg_mxnet.framework import gluon, mx, npx
from vgg_mxnet.losses import cross_entropy
from vgg_mxnet.model import NAME, VGG, finish_batch_norms, running_variances

MODEL_SUFFIX = backends.BACKENDS[NAME].trained_suffix
_CONFIG_KEY = "config"  # no "." in it, so the file still loads with VGG(...).load_parameters(path, ignore_extra=True)


def _params(model: VGG) -> dict:
    """Structural name ("0.0.weight", as ``save_parameters`` writes) -> Parameter; stable across processes,
    unlike Gluon's global-counter names ("conv3_weight")."""
    return model._collect_params_with_prefix()


def _set_params(model: VGG, arrays: dict, source: str) -> None:
    """Copy ``arrays`` (name -> NumPy or MXNet array) into ``model``; every name and shape is checked first."""
    params = _params(model)
    training.check_state({k: p.shape for k, p in params.items()}, arrays, source)
    for name, param in params.items():
        value = arrays[name]
        param.set_data(value if isinstance(value, mx.np.ndarray) else mx.np.array(value, dtype=value.dtype))


def _as_mx(x):
    """Batches are normally mxnet.np arrays already; NumPy arrays are accepted too."""
    return x if isinstance(x, mx.np.ndarray) else mx.np.array(x, dtype=x.dtype)


class Engine:
    """One SGD step per batch on a hybridized (CachedOp) Gluon graph; MXNet runs asynchronously, so
    the ``.item()`` calls on loss and correct count are the only waits per step.

    ``hybridize(static_alloc=True, static_shape=True)`` runs one cached graph with its memory planned once,
    instead of dispatching each operator from Python as the book's un-hybridized code does
    (``benchmarks/book_reference.py`` measures the two side by side).
    """

    def __init__(self, model: VGG, recipe: training.Recipe, world: World | None = None) -> None:
        self.model = model
        self.world = world or dist.current()
        self.contexts = dist.contexts(self.world)
        if self.contexts != [mx.cpu()]:
            model.collect_params().reset_ctx(self.contexts)  # one copy of every parameter per context
        model.hybridize(static_alloc=True, static_shape=True)
        self.loss = partial(cross_entropy, label_smoothing=recipe.label_smoothing)  # per example, on logits
        self.test_flip = recipe.test_flip
        # One CPU context needs no KVStore (the Trainer updates in place); several contexts sum their
        # gradients in a "device" store, several processes in the dist_sync one. update_on_kvstore=False
        # keeps the optimizer (and its momentum) in this process: with True, a dist store's servers get a
        # pickled optimizer once and never see a later lr.
        # MXNet's wd is coupled L2 (added to the gradient) as in torch.optim.SGD. Its momentum state is
        # lr-scaled (mom = m*mom - lr*(grad + wd*w); w += mom) where torch keeps the velocity
        # (buf = m*buf + grad + wd*w; w -= lr*buf), so mom = -lr*buf. Every step therefore first rescales
        # the states to its own lr (_rescale_momentum): exactly torch's trajectory under any schedule,
        # still on MXNet's fused sgd_mom_update kernel and its own Updater states, for one multiply per
        # parameter when the lr changes (a re-implemented optimizer would run several ops every step).
        handle = self.world.handle
        kvstore = handle.kvstore if handle is not None and handle.kvstore is not None else \
            ("device" if len(self.contexts) > 1 else None)
        self.trainer = gluon.Trainer(model.collect_params(), "sgd",
                                     {"learning_rate": recipe.lr, "momentum": recipe.momentum,
                                      "wd": recipe.weight_decay}, kvstore=kvstore,
                                     update_on_kvstore=False if kvstore is not None else None)
        names = {id(p): name for name, p in _params(model).items()}
        self.names = [names[id(p)] for p in self.trainer._params]  # optimizer state index -> parameter name
        # The lr the momentum states are scaled for (mom = -scaled_for * velocity); None while they are
        # zero or absent (before the first step, momentum 0) or loaded from an old checkpoint (load_state).
        self.scaled_for: float | None = None

    def reseed(self, seed: int) -> None:
        # Dropout draws from MXNet's generators (one per context, each seeded from the seed and its device
        # id), which have no state getter/setter: the loop reseeds every epoch so the masks are a function
        # of (seed, epoch, rank) and a resumed run repeats them.
        mx.random.seed(distributed.worker_seed(seed, self.world.rank))

    def _rescale_momentum(self, lr: float) -> None:
        """Scale every momentum state (one Updater per context, all alike) from ``scaled_for`` to ``lr``."""
        if self.trainer.optimizer.momentum == 0:
            return
        if lr <= 0:  # -0 * velocity: the velocity would be lost, where torch keeps it through the step
            raise ValueError(f"lr {lr:g} with momentum: MXNet's lr-scaled momentum state needs an lr > 0")
        if self.scaled_for is not None and lr != self.scaled_for:
            ratio = lr / self.scaled_for
            for updater in self._updaters():
                for state in updater.states.values():
                    if state is not None:
                        state *= ratio  # in place, in float32
        self.scaled_for = lr

    def step(self, images, labels, lr: float) -> tuple[float, int]:
        images, labels = _as_mx(images), _as_mx(labels)
        self._rescale_momentum(lr)
        self.trainer.set_learning_rate(lr)
        xs = gluon.utils.split_and_load(images, self.contexts)  # this process's shard, a slice per context
        ys = gluon.utils.split_and_load(labels, self.contexts)
        before = running_variances(self.model)
        with mx.autograd.record():  # training mode: dropout on, batch norms on batch statistics
            logits = [self.model(x) for x in xs]
            losses = [self.loss(z, y) for z, y in zip(logits, ys)]
        mx.autograd.backward(losses)  # sums of per-example gradients, summed over contexts and workers ...
        finish_batch_norms(self.model, before, xs[0].shape[0])
        global_n = images.shape[0] * self.world.processes
        self.trainer.step(global_n)  # ... rescaled by 1/global batch: the mean gradient, as torch's mean loss
        loss_sum = sum(loss.sum().item() for loss in losses)
        correct = sum(int((z.argmax(axis=1) == y.astype(np.int64)).sum().item()) for z, y in zip(logits, ys))
        if self.world.processes > 1:
            loss_sum, correct_sum, _ = dist.all_sum([loss_sum, correct, images.shape[0]])
            return loss_sum / global_n, int(correct_sum)
        return loss_sum / global_n, correct

    def evaluate(self, batches) -> float:
        return evaluate(self.model, batches, test_flip=self.test_flip)

    def _updaters(self) -> list:
        return self.trainer._updaters  # one per context, all holding the same state

    def state(self) -> dict[str, np.ndarray]:
        arrays = {f"model.{k}": p.data().asnumpy() for k, p in _params(self.model).items()}
        # The momentum buffers read straight from the updater (what save_states would pickle): plain
        # arrays, no pickle in checkpoints. Absent before the first step and when momentum is 0. They are
        # MXNet's lr-scaled states, saved as they are with the lr they are scaled for ("optimizer.lr"),
        # so a resumed run rescales them exactly as the uninterrupted one does.
        for i, buf in self._updaters()[0].states.items():
            if buf is not None:
                arrays[f"optimizer.{self.names[i]}.momentum"] = buf.asnumpy()
        if self.scaled_for is not None:
            arrays["optimizer.lr"] = np.asarray(self.scaled_for, np.float64)
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        _set_params(self.model, {k[6:]: v for k, v in arrays.items() if k.startswith("model.")}, "checkpoint")
        for k, updater in enumerate(self._updaters()):
            for i, name in enumerate(self.names):
                buf = arrays.get(f"optimizer.{name}.momentum")
                if buf is not None and self.trainer.optimizer.momentum > 0:
                    weight = self.trainer._params[i].list_data()[k]
                    updater.states[i] = mx.nd.array(buf, ctx=weight.ctx, dtype=buf.dtype)
                    updater.states_synced[i] = True
        # A checkpoint written before issue 24 has lr-scaled states but no "optimizer.lr": they are taken
        # as scaled for the first lr after the resume, i.e. continued as the engine that wrote them would
        # have (one step's lr ratio off torch's convention; exact under a constant lr).
        scaled_for = arrays.get("optimizer.lr")
        self.scaled_for = float(scaled_for) if scaled_for is not None and self.trainer.optimizer.momentum > 0 \
            else None


def step_split(engine: Engine) -> tuple[Callable[..., float], Callable[..., tuple[float, int]]]:
    """The step split's two timed calls, one process: the engine's hybridized forward and loss under
    ``autograd.record`` (as in the step) and its full step, each followed by ``mx.nd.waitall``: MXNet runs
    asynchronously, and the step's own reads of its loss do not wait for the weight update."""
    def forward(images, labels) -> float:
        with mx.autograd.record():
            loss = engine.loss(engine.model(_as_mx(images)), _as_mx(labels)).mean()
        mx.nd.waitall()
        return loss.item()

    def step(images, labels, lr: float) -> tuple[float, int]:
        result = engine.step(images, labels, lr)
        mx.nd.waitall()
        return result
    return forward, step


train = partial(training.train, NAME, Engine)
train.__doc__ = "Train a VGG on load_fashion_mnist batches with minibatch SGD; arguments as runtime.training.train."


def evaluate(model: VGG, data, test_flip: bool = False) -> float:
    """Test accuracy with dropout off; ``data`` is a ``load_fashion_mnist`` result or any batches. With
    ``test_flip`` each image's logits are the mean of its own and its mirror image's."""
    def count(images, labels) -> int:  # outside autograd.record(): predict mode, dropout off
        images, labels = _as_mx(images), _as_mx(labels)
        logits = (model(images) + model(mx.np.flip(images, axis=3))) / 2 if test_flip else model(images)
        return int((logits.argmax(axis=1) == labels.astype(np.int64)).sum().item())
    return training.accuracy(training.test_batches(data), count)


def save(model: VGG, path: str | Path) -> Path:
    """Save parameters and config in one ``npx.save`` file (atomically).

    The keys are ``save_parameters``'s plus ``"config"`` (the ``VGG(...)`` arguments as UTF-8 JSON bytes),
    so ``VGG(...).load_parameters(path, ignore_extra=True)`` reads the weights too.
    """
    config = json.dumps(model.config.to_dict()).encode("utf-8")
    arrays = {k: p.data() for k, p in _params(model).items()}
    arrays[_CONFIG_KEY] = mx.np.array(np.frombuffer(config, dtype=np.uint8), dtype=np.uint8)
    return atomic.write_with(path, lambda tmp: npx.save(tmp, arrays))


def load(path: str | Path) -> VGG:
    """Rebuild a model written by :func:`save`."""
    arrays = npx.load(str(path))
    if _CONFIG_KEY not in arrays:
        raise ValueError(f"{path} has no model config: it was not written by vgg_mxnet.trainer.save")
    config = json.loads(arrays.pop(_CONFIG_KEY).asnumpy().tobytes().decode("utf-8"))
    model = VGG(ModelConfig.from_file(config, path))
    _set_params(model, arrays, str(path))
    return model
