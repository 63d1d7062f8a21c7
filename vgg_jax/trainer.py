"""Training, evaluation and native save/load for the Flax NNX VGG; the loop itself is common.runtime.training.fit."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization
from flax.nnx import filterlib

from common.core import atomic, backends, precision
from common.core.config import ModelConfig
from common.runtime import training
from common.runtime.distributed import World
from vgg_jax import distributed as dist
from vgg_jax.losses import cross_entropy
from vgg_jax.model import NAME, VGG, eval_logits

MODEL_SUFFIX = backends.BACKENDS[NAME].trained_suffix
#: what a model file and a checkpoint keep: parameters and batch norms' running statistics (not RNG state)
_SAVED = (nnx.Param, nnx.BatchStat)


def _sgd(learning_rate: float, momentum: float, weight_decay: float) -> optax.GradientTransformation:
    """torch.optim.SGD's update: coupled L2 (grad + wd * w), then buf = m * buf + grad, w -= lr * buf."""
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(learning_rate, momentum=momentum or None))


@nnx.jit(static_argnames=("label_smoothing",))
def _train_step(model: VGG, optimizer: nnx.Optimizer, images: jax.Array, labels: jax.Array,
                lr: jax.Array, label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """Forward (dropout on), mean cross-entropy, gradients, SGD update: one compiled XLA program."""
    optimizer.opt_state.hyperparams["learning_rate"][...] = lr  # a traced value: no retrace per lr

    def loss_fn(model: VGG) -> tuple[jax.Array, jax.Array]:
        logits = model(images).astype(jnp.float32)  # the loss and its softmax in float32
        return cross_entropy(logits, labels, label_smoothing).mean(), logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, (logits.argmax(-1) == labels).sum()


def _apply(model: VGG, optimizer: nnx.Optimizer, grads) -> None:
    optimizer.update(model, grads)


def _skip(model: VGG, optimizer: nnx.Optimizer, grads) -> None:
    """A step with an inf or NaN gradient: model and optimizer stay as they were."""


@nnx.jit(static_argnames=("label_smoothing",))
def _scaled_train_step(model: VGG, optimizer: nnx.Optimizer, images: jax.Array, labels: jax.Array,
                       lr: jax.Array, scale: jax.Array, finite_steps: jax.Array,
                       label_smoothing: float = 0.0) -> tuple[jax.Array, ...]:
    """:func:`_train_step` with fp16's dynamic loss scaling (common.core.precision's rule): gradients of
    the scaled loss, unscaled; a step with an inf or NaN gradient leaves model and optimizer as they were."""
    optimizer.opt_state.hyperparams["learning_rate"][...] = lr

    def loss_fn(model: VGG) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        logits = model(images).astype(jnp.float32)
        loss = cross_entropy(logits, labels, label_smoothing).mean()
        return loss * scale, (loss, logits)

    (_, (loss, logits)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    grads = jax.tree.map(lambda g: g / scale, grads)
    finite = jnp.all(jnp.array([jnp.isfinite(g).all() for g in jax.tree.leaves(grads)]))
    nnx.cond(finite, _apply, _skip, model, optimizer, grads)
    scale, finite_steps = precision.next_loss_scale(scale, finite_steps, finite, jnp.where)
    return loss, (logits.argmax(-1) == labels).sum(), scale, finite_steps


def _flat(state: nnx.State, prefix: str) -> dict[str, np.ndarray]:
    return {prefix + ".".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(state)}


def _restore(target, arrays: dict[str, np.ndarray], prefix: str, source: str, only: filterlib.Filter = ...) -> None:
    """Set every variable of ``target`` (those ``only`` selects) from ``arrays`` under ``prefix``."""
    state = nnx.state(target, only)
    flat = nnx.to_flat_state(state)
    names = [prefix + ".".join(map(str, path)) for path, _ in flat]
    training.check_state({n: v[...].shape for n, (_, v) in zip(names, flat)},
                         {k: v for k, v in arrays.items() if k.startswith(prefix)}, source)
    for name, (_, variable) in zip(names, flat):
        variable[...] = jnp.asarray(arrays[name], dtype=variable[...].dtype)
    nnx.update(target, nnx.from_flat_state(flat))


class Engine:
    """One ``nnx.jit``-compiled step per batch; loss and correct count come back as device scalars and are
    read with ``float``/``int``, the only host synchronisation per step.

    On a mesh (several devices or processes) the state is replicated and each batch sharded along ``data``;
    the same step then computes the global batch's loss, with the gradient all-reduce inside. Dropout
    masks are drawn for the global batch, so they equal one process's whatever the number of workers."""

    def __init__(self, model: VGG, recipe: training.Recipe, world: World | None = None) -> None:
        self.model = model
        self.world = world or dist.current()
        self.mesh = self.world.handle
        tx = optax.inject_hyperparams(_sgd, static_args=("momentum", "weight_decay"))(
            learning_rate=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
        self.optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        self.dropouts = [m for m in model.layers if isinstance(m, nnx.Dropout)]
        self.label_smoothing, self.test_flip = recipe.label_smoothing, recipe.test_flip
        # fp16's loss scale and its count of finite steps (host values between steps; None otherwise)
        self.loss_scale = (jnp.float32(precision.LOSS_SCALING.initial), jnp.int32(0)) \
            if precision.get(model.config.precision).loss_scaling else None
        self._replicate()

    def _replicate(self) -> None:
        """Every variable of model and optimizer onto every device of the mesh (no-op on one device)."""
        if self.mesh is not None:
            for obj in (self.model, self.optimizer):
                nnx.update(obj, dist.replicate(self.mesh, nnx.state(obj)))

    def _put(self, x, sharded: bool = True) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(x)
        return (dist.global_batch if sharded else dist.everywhere)(self.mesh, np.asarray(x))

    def reseed(self, seed: int) -> None:
        # each Dropout layer its own stream derived from (seed, layer): the same masks after a resume,
        # and different masks in the two layers (nnx.reseed would give both the same key)
        for i, layer in enumerate(self.dropouts):
            layer.rngs.key[...] = jax.random.fold_in(jax.random.key(seed), i)
            layer.rngs.count[...] = jnp.zeros_like(layer.rngs.count[...])
        self._replicate()  # the same key in every process: masks for the global batch

    def step(self, images, labels, lr: float) -> tuple[float, int]:
        self.model.train()
        batch = (self.model, self.optimizer, self._put(images), self._put(labels), jnp.float32(lr))
        if self.loss_scale is None:
            loss, correct = _train_step(*batch, label_smoothing=self.label_smoothing)
        else:
            loss, correct, scale, finite_steps = _scaled_train_step(*batch, *self.loss_scale,
                                                                    label_smoothing=self.label_smoothing)
            self.loss_scale = (scale, finite_steps)
        return float(loss), int(correct)

    def evaluate(self, batches) -> float:
        return _evaluate(self.model, batches, lambda x: self._put(x, sharded=False), self.test_flip)

    def state(self) -> dict[str, np.ndarray]:
        scaling = dict(zip(precision.LOSS_SCALE_KEYS, map(np.asarray, self.loss_scale or ())))
        return {**_flat(nnx.state(self.model, _SAVED), "model."),
                **_flat(nnx.state(self.optimizer), "optimizer."), **scaling}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        _restore(self.model, arrays, "model.", "checkpoint", _SAVED)
        scaling = {k: arrays[k] for k in precision.LOSS_SCALE_KEYS if k in arrays}
        _restore(self.optimizer, {k: v for k, v in arrays.items() if k not in scaling}, "optimizer.", "checkpoint")
        if self.loss_scale is not None and scaling:
            self.loss_scale = (jnp.float32(scaling[precision.LOSS_SCALE_KEYS[0]]),
                               jnp.int32(scaling[precision.LOSS_SCALE_KEYS[1]]))
        self._replicate()


@nnx.jit(static_argnames=("label_smoothing",))
def _forward_loss(model: VGG, images: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """The training step's forward and mean cross-entropy alone, compiled as the step is."""
    logits = model(images).astype(jnp.float32)
    return cross_entropy(logits, labels, label_smoothing).mean()


def step_split(engine: Engine) -> tuple[Callable[..., float], Callable[..., tuple[float, int]]]:
    """The step split's two timed calls, one process: the engine's jitted training-mode forward and loss,
    and its full step; ``block_until_ready`` (and reading the step's loss) waits for either to finish."""
    def forward(images, labels) -> float:
        engine.model.train()
        loss = _forward_loss(engine.model, engine._put(images), engine._put(labels),
                             label_smoothing=engine.label_smoothing)
        return float(jax.block_until_ready(loss))
    return forward, engine.step


train = partial(training.train, NAME, Engine)
train.__doc__ = "Train a VGG on load_fashion_mnist batches with minibatch SGD; arguments as runtime.training.train."


def evaluate(model: VGG, data, test_flip: bool = False) -> float:
    """Test accuracy with dropout off; ``data`` is a ``load_fashion_mnist`` result or any batches. With
    ``test_flip`` each image's logits are the mean of its own and its mirror image's."""
    return _evaluate(model, data, jnp.asarray, test_flip)


def _evaluate(model: VGG, data, put, test_flip: bool) -> float:
    model.eval()  # a training step sets training mode itself

    def logits(x: jax.Array) -> jax.Array:
        return (eval_logits(model, x) + eval_logits(model, jnp.flip(x, axis=2))) / 2 if test_flip \
            else eval_logits(model, x)

    return training.accuracy(training.test_batches(data), lambda x, y: int(
        (logits(put(x)).argmax(-1) == put(y)).sum()))


def save(model: VGG, path: str | Path) -> Path:
    """Config, parameters and running statistics in one msgpack file (flax.serialization), written atomically."""
    blob = {"config": model.config.to_dict(), "params": _flat(nnx.state(model, _SAVED), "")}
    return atomic.write_bytes(path, serialization.msgpack_serialize(blob))


def load(path: str | Path) -> VGG:
    """Rebuild a model written by :func:`save`."""
    blob = serialization.msgpack_restore(Path(path).read_bytes())
    model = VGG(ModelConfig.from_file(blob["config"], path))
    _restore(model, {k: np.asarray(v) for k, v in blob["params"].items()}, "", str(path), _SAVED)
    return model
