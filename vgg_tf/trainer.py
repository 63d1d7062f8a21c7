"""Training, evaluation and native save/load for the Keras VGG; the loop itself is common.runtime.training.fit."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from common.core import atomic, backends, precision
from common.core.config import ConfigError, ModelConfig
from common.runtime import distributed, training
from common.runtime.distributed import World
from common.serving import formats
from vgg_tf import distributed as dist
from vgg_tf.framework import keras, tf
from vgg_tf.losses import cross_entropy
from vgg_tf.model import NAME, VGG, logits_of

# isort: split
from keras.src.saving import saving_lib  # after vgg_tf.framework, which picks Keras's backend

MODEL_SUFFIX = backends.BACKENDS[NAME].trained_suffix
JIT_COMPILE = False  # XLA on CPU: see Engine's docstring


def _variables(model: VGG) -> dict[str, keras.Variable]:
    """Structural name ("0.1.kernel": layer, sub-layer, weight) -> variable; stable across processes,
    unlike Keras's counter-based paths ("conv2d_3/kernel")."""
    named = {}
    for i, layer in enumerate(model.layers):
        subs = list(enumerate(layer.layers)) if isinstance(layer, keras.Sequential) else [(None, layer)]
        for j, sub in subs:
            for w in sub.weights:
                named[".".join(str(p) for p in (i, j, w.name) if p is not None)] = w
    return named


def _dropouts(model: VGG) -> list:
    return [m for m in model.layers if isinstance(m, keras.layers.Dropout)]


class Engine:
    """One ``tf.function`` step per batch: forward (dropout on), mean cross-entropy, gradients and a
    hand-written SGD update with torch.optim.SGD's semantics (Keras's SGD keeps ``-lr * velocity``,
    which differs from torch once the lr changes): buf = m * buf + grad + wd * w; w -= lr * buf.
    The lr is a tensor argument, so a new lr per step never retraces.

    Graph mode is the default (``JIT_COMPILE``): it runs oneDNN's convolutions, which XLA's CPU compiler
    (``jit_compile=True``) replaces with its own, slower on CPU and slower to compile.
    """

    def __init__(self, model: VGG, recipe: training.Recipe, world: World | None = None,
                 jit_compile: bool = JIT_COMPILE) -> None:
        self.model = model
        self.world = world or dist.current()
        self.strategy = self.world.handle  # None for one device
        self.named = _variables(model)
        self.trainable = list(model.trainable_variables)
        self.names = {id(v): k for k, v in self.named.items()}
        self.momentum, self.weight_decay = recipe.momentum, recipe.weight_decay
        self.label_smoothing, self.test_flip = recipe.label_smoothing, recipe.test_flip
        with dist.scope():
            self.buffers = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.trainable] \
                if recipe.momentum else []
            # fp16's dynamic loss scaling (common.core.precision's rule, GradScaler's): scale and the count
            # of finite steps, the same in every replica
            self.loss_scale = None if not precision.get(model.config.precision).loss_scaling else [
                tf.Variable(value, trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                for value in (tf.constant(precision.LOSS_SCALING.initial, tf.float32), tf.constant(0, tf.int64))]
        step = self._replica_step if self.strategy is None else self._distributed_step
        self._step = tf.function(step, jit_compile=jit_compile, reduce_retracing=True)

    def _replica_step(self, images: tf.Tensor, labels: tf.Tensor, lr: tf.Tensor,
                      global_n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One replica's part: the loss is its examples' sum over the *global* batch size, so the summed
        (all-reduced) gradients are the global batch's mean gradient. Returns loss sum and correct count."""
        labels = tf.cast(labels, tf.int64)
        with tf.GradientTape() as tape:
            logits = logits_of(self.model, images, training=True)
            per_example = cross_entropy(logits, labels, self.label_smoothing)
            loss = tf.reduce_sum(per_example) / global_n
            scale = self.loss_scale[0] if self.loss_scale else None
            scaled = loss * scale if scale is not None else loss
        grads = tape.gradient(scaled, self.trainable)
        if self.strategy is not None:
            grads = tf.distribute.get_replica_context().all_reduce("sum", grads)
        finite = True
        if scale is not None:  # unscale; a step with an inf or NaN gradient changes nothing but the scale
            grads = [g / scale for g in grads]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        for i, (v, g) in enumerate(zip(self.trainable, grads)):
            if self.weight_decay:
                g = g + self.weight_decay * v.value
            if self.momentum:
                self.buffers[i].assign(tf.where(finite, self.momentum * self.buffers[i] + g, self.buffers[i]))
                g = self.buffers[i]
            # in a replica: this replica's copy, which every replica updates alike
            v.assign_sub(tf.where(finite, lr * g, tf.zeros_like(g)) if scale is not None else lr * g)
        if self.loss_scale:
            for variable, value in zip(self.loss_scale, precision.next_loss_scale(
                    scale, self.loss_scale[1], finite, tf.where)):
                variable.assign(tf.cast(value, variable.dtype))
        return tf.reduce_sum(per_example), tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == labels, tf.int32))

    def _distributed_step(self, images, labels, lr: tf.Tensor, global_n: tf.Tensor) -> list[tf.Tensor]:
        sums = self.strategy.run(self._replica_step, args=(images, labels, lr, global_n))
        return [self.strategy.reduce("sum", v, axis=None) for v in sums]

    def _dropout_keys(self, seed: int) -> np.ndarray:
        """(replicas in this process, Dropout layers) keys: each layer its own key from (seed, layer), and
        every replica its own seed; keys stay below int32.max - 1, which TF's stateless ops reduce modulo."""
        first = self.world.rank * self.world.devices
        return np.array([[np.random.SeedSequence([distributed.worker_seed(seed, first + r), i])
                          .generate_state(1, np.uint64)[0] % (2**31 - 2)
                          for i in range(len(_dropouts(self.model)))] for r in range(self.world.devices)],
                        dtype=np.int64)

    def reseed(self, seed: int) -> None:
        # Keras 3 Dropout draws from its layer's SeedGenerator, state [key, counter], counter += 1 per call.
        # Each layer gets its own key and counter 0: with one key and counters 0, 1, the second layer would
        # reuse the first layer's mask of the previous step. Under a strategy the state is per replica
        # (aggregation "none"), so each replica's copy is set inside the replica.
        layers = [layer for layer in _dropouts(self.model) if hasattr(layer, "seed_generator")]  # rate 0: none
        if not layers:
            return
        keys = self._dropout_keys(seed)
        if self.world.devices == 1:
            for i, layer in enumerate(layers):
                state = layer.seed_generator.state
                state.assign(np.array([keys[0, i], 0], dtype=state.dtype))
            return

        def assign(table: tf.Tensor) -> None:
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group % self.world.devices
            for i, layer in enumerate(layers):
                state = layer.seed_generator.state
                state.assign(tf.cast(tf.stack([table[replica, i], 0]), state.dtype))

        self.strategy.run(assign, args=(tf.constant(keys),))

    def step(self, images, labels, lr: float) -> tuple[float, int]:
        images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
        n = int(labels.shape[0])
        if self.strategy is not None and self.world.devices > 1:  # this process's shard, one slice per device
            part = n // self.world.devices
            images, labels = (self.strategy.experimental_distribute_values_from_function(
                lambda ctx, t=t: t[(ctx.replica_id_in_sync_group % self.world.devices) * part:][:part])
                for t in (images, labels))
        global_n = n * self.world.processes
        loss_sum, correct = self._step(images, labels, tf.constant(lr, tf.float32),
                                       tf.constant(global_n, tf.float32))
        return float(loss_sum) / global_n, int(correct)

    def evaluate(self, batches) -> float:
        return evaluate(self.model, batches, test_flip=self.test_flip)

    def state(self) -> dict[str, np.ndarray]:
        arrays = {f"model.{k}": np.asarray(v.numpy()) for k, v in self.named.items()}
        for v, buf in zip(self.trainable, self.buffers):
            arrays[f"optimizer.{self.names[id(v)]}.momentum"] = buf.numpy()
        for key, variable in zip(precision.LOSS_SCALE_KEYS, self.loss_scale or ()):
            arrays[key] = np.asarray(variable.numpy())
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        _set_variables(self.model, {k[6:]: v for k, v in arrays.items() if k.startswith("model.")}, "checkpoint")
        for v, buf in zip(self.trainable, self.buffers):
            key = f"optimizer.{self.names[id(v)]}.momentum"
            if key in arrays:
                buf.assign(arrays[key])
        for key, variable in zip(precision.LOSS_SCALE_KEYS, self.loss_scale or ()):
            if key in arrays:
                variable.assign(tf.cast(arrays[key], variable.dtype))


def _set_variables(model: VGG, arrays: dict[str, np.ndarray], source: str) -> None:
    """Assign ``arrays`` to the model's variables by structural name; every name and shape checked first."""
    named = _variables(model)
    training.check_state({k: v.shape for k, v in named.items()}, arrays, source)
    for k, v in named.items():
        v.assign(arrays[k])


def step_split(engine: Engine) -> tuple[Callable[..., float], Callable[..., tuple[float, int]]]:
    """The step split's two timed calls, one process: the engine's training-mode forward and loss as a
    graph-mode ``tf.function`` (``JIT_COMPILE``, as the step's default), and its full step; reading the loss
    waits for either to finish."""
    @tf.function(jit_compile=JIT_COMPILE, reduce_retracing=True)
    def loss(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        logits = logits_of(engine.model, images, training=True)
        return tf.reduce_mean(cross_entropy(logits, labels, engine.label_smoothing))

    return lambda images, labels: float(loss(images, labels)), engine.step


train = partial(training.train, NAME, Engine)
train.__doc__ = "Train a VGG on load_fashion_mnist batches with minibatch SGD; arguments as runtime.training.train."


@tf.function(reduce_retracing=True)
def _correct(model: VGG, images: tf.Tensor, labels: tf.Tensor, test_flip: bool) -> tf.Tensor:
    logits = logits_of(model, images)
    if test_flip:  # a Python bool: one trace each way
        logits = (logits + logits_of(model, tf.reverse(images, axis=[2]))) / 2
    return tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == tf.cast(labels, tf.int64), tf.int32))


def evaluate(model: VGG, data, test_flip: bool = False) -> float:
    """Test accuracy with dropout off; ``data`` is a ``load_fashion_mnist`` result or any batches. With
    ``test_flip`` each image's logits are the mean of its own and its mirror image's."""
    return training.accuracy(training.test_batches(data), lambda x, y: int(
        _correct(model, tf.convert_to_tensor(x), tf.convert_to_tensor(y), test_flip)))


def _check_suffix(path: str | Path) -> None:
    """Keras reads and writes its weights format only under names ending in ``.weights.h5``: refuse others
    up front, rather than write a file that :func:`load` could not read."""
    if not str(path).endswith(MODEL_SUFFIX):
        raise ValueError(f"{path}: a vgg_tf model file must end in {MODEL_SUFFIX} (Keras's weights format)")


def save(model: VGG, path: str | Path) -> Path:
    """Keras's native weights file (``model.save_weights``, HDF5) with the ``VGG(...)`` arguments stored as
    a JSON attribute, written atomically; ``VGG(...).load_weights(path)`` reads it too."""
    _check_suffix(path)
    config = json.dumps(model.config.to_dict())

    def write(tmp: str) -> None:
        model.save_weights(tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs["vgg_config"] = config

    return atomic.write_with(path, write, suffix=MODEL_SUFFIX)


def load(path: str | Path) -> VGG:
    """Rebuild a model written by :func:`save`."""
    _check_suffix(path)
    try:
        with h5py.File(path, "r") as f:
            config = json.loads(f.attrs["vgg_config"])
    except (OSError, KeyError) as exc:
        raise ValueError(f"{path} is not a model written by vgg_tf.save ({exc})") from None
    model = VGG(ModelConfig.from_file(config, path))
    _check_weights_file(model, path)
    model.load_weights(path)
    return model


class _Recorder(saving_lib.H5IOStore):
    """A Keras weights store that records where saving would put each weight (dataset path, shape and dtype)
    and writes nothing: the layout comes from Keras's own walk over the model, as ``save_weights`` does."""

    def __init__(self) -> None:  # no file behind it
        self.found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._path = ""

    def __bool__(self) -> bool:
        return True

    def make(self, path: str, metadata: dict | None = None) -> _Recorder:
        self._path = path
        return self

    def __setitem__(self, key: str, value) -> None:
        self.found["/".join(filter(None, (self._path, "vars", key)))] = (tuple(value.shape), np.dtype(value.dtype))


def _layout(model: VGG) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Dataset path -> (shape, dtype) of every weight ``model.save_weights`` writes."""
    recorder = _Recorder()
    saving_lib._save_state(model, weights_store=recorder, assets_store=None, inner_path="", visited_saveables=set())
    return recorder.found


def _problems(f: h5py.File, layout: dict) -> list[str]:
    """What in the open weights file ``f`` is not the dataset ``layout`` has at that path (shape, dtype),
    stored in the file itself at a fixed size, reached by its own (hard) link; and what it lacks."""
    found, problems = set(), []

    def visit(name: str, link) -> None:
        if not isinstance(link, h5py.HardLink):
            problems.append(f"{name} is a link")
        elif isinstance(item := f[name], h5py.Dataset):
            found.add(name)
            want = layout.get(name)
            if want is None:
                problems.append(f"it holds {name}, which its model has not")
            elif (item.shape, item.dtype) != want:
                problems.append(f"{name} is {item.shape} {item.dtype} where its model has {want[0]} {want[1]}")
            elif item.maxshape != item.shape or item.external or item.is_virtual:
                problems.append(f"{name} is resizable or stored outside the file")

    f.visititems_links(visit)
    return problems + [f"it lacks {name}" for name in sorted(set(layout) - found)]


def _check_weights_file(model: VGG, path: str | Path) -> None:
    """Refuse (ConfigError, one line) a weights file that is not what ``model.save_weights`` writes for this
    model, before Keras reads a weight: an HDF5 dataset may declare any shape and be filled with its fill
    value in memory, so a small file could ask for gigabytes."""
    with h5py.File(path, "r") as f:
        problems = _problems(f, _layout(model))
    if problems:
        raise ConfigError(f"{path}: its weights do not fit its config: {formats.printable(problems[0], 200)}")
