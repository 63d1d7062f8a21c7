"""The training loop all four backends share: recipe, lr schedule, epochs, progress, NaN stop, checkpoints.

A backend supplies an *engine* (its jitted/compiled training step, evaluation and state arrays); this
module does everything around it, so the four trainers differ only in framework code. ``vgg race`` runs the
same :func:`loop` with a hook that evaluates at its own points and stops at its target.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import time
from collections.abc import Callable, Iterable
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from common.core.config import MAX_SEED, ModelConfig
from common.data.augment import Augmentation
from common.data.batches import Batches
from common.runtime import checkpoint, distributed, run_folder
from common.runtime.distributed import World
from common.runtime.history import History

SCHEDULES = ("constant", "cosine")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run. The defaults are the book's: plain minibatch SGD."""

    epochs: int = 10
    lr: float = 0.05
    batch_size: int = 128
    seed: int = 0
    momentum: float = 0.0
    weight_decay: float = 0.0  # L2 term added to the gradient (coupled), as torch.optim.SGD does
    schedule: str = "constant"  # or "cosine": cosine decay to 0 after the warm-up
    warmup_epochs: float = 0.0  # linear warm-up from lr/warmup_steps to lr
    crop_padding: int = 0  # random crops of the training images padded by this many pixels (0: none)
    flip: bool = False  # random horizontal flips of half the training images
    label_smoothing: float = 0.0  # the loss's targets: (1 - a) one-hot + a / classes, as torch's cross_entropy
    test_flip: bool = False  # evaluation averages the logits of each test image and its mirror image

    def __post_init__(self) -> None:
        checks = [("epochs", self.epochs, isinstance(self.epochs, int) and self.epochs > 0, "a positive integer"),
                  ("batch_size", self.batch_size, isinstance(self.batch_size, int) and self.batch_size > 0,
                   "a positive integer"),
                  ("lr", self.lr, self.lr > 0 and math.isfinite(self.lr), "a finite number above 0"),
                  ("seed", self.seed, isinstance(self.seed, numbers.Integral) and 0 <= self.seed <= MAX_SEED,
                   f"an integer from 0 to {MAX_SEED}"),
                  ("momentum", self.momentum, 0 <= self.momentum < 1, "in [0, 1)"),
                  ("weight_decay", self.weight_decay, 0 <= self.weight_decay < math.inf, "a finite number >= 0"),
                  ("schedule", self.schedule, self.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
                  ("warmup_epochs", self.warmup_epochs, 0 <= self.warmup_epochs <= self.epochs,
                   "between 0 and epochs"),
                  ("crop_padding", self.crop_padding,
                   isinstance(self.crop_padding, int) and 0 <= self.crop_padding <= 8, "an integer from 0 to 8"),
                  ("label_smoothing", self.label_smoothing, 0 <= self.label_smoothing < 1, "in [0, 1)")]
        for name, value, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name}={value!r} is not allowed: it must be {allowed}")

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate of global ``step`` (0-based): linear warm-up, then constant or cosine to 0."""
        warmup = round(self.warmup_epochs * steps_per_epoch)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        if self.schedule == "constant":
            return self.lr
        total = self.epochs * steps_per_epoch
        progress = (step - warmup) / max(1, total - warmup)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    @property
    def augmentation(self) -> Augmentation:
        """The training images' random crop and flip (inactive where the recipe asks for neither)."""
        return Augmentation(padding=self.crop_padding, flip=self.flip)

    def epoch_seed(self, epoch: int) -> int:
        """Dropout seed of ``epoch``: a function of (seed, epoch), so a resumed run draws the same masks."""
        return int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])


class Engine(Protocol):
    """What a backend provides to :func:`fit`: ``step`` takes this process's shard of a global batch and
    returns the global batch's mean loss and correct count, so every worker logs the same History."""

    world: World

    def reseed(self, seed: int) -> None: ...
    def step(self, images, labels, lr: float) -> tuple[float, int]: ...  # mean loss, correct predictions
    def evaluate(self, batches: Iterable) -> float: ...
    def state(self) -> dict[str, np.ndarray]: ...
    def load_state(self, arrays: dict[str, np.ndarray]) -> None: ...


def run_info(backend: str, model) -> dict:
    """What identifies a model across a resume: the backend and the model's config, less the init seed (a
    resumed run's weights come from its checkpoint, and the recipe's ``seed`` is compared instead)."""
    return {"backend": backend, **{k: v for k, v in model.config.to_dict().items() if k != "seed"}}


def check_state(expected: dict[str, tuple], arrays: dict, source: str) -> None:
    """Refuse ``arrays`` (name -> array) unless every name in ``expected`` (name -> shape) is there with
    its shape; says what is missing, unexpected or mis-shaped. Checked before anything is changed."""
    missing, unexpected = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    wrong = [f"{k} {tuple(arrays[k].shape)} (expected {tuple(shape)})" for k, shape in expected.items()
             if k in arrays and tuple(arrays[k].shape) != tuple(shape)]
    problems = [f"{label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong))
                if items]
    if problems:
        raise ValueError(f"{source} does not fit this model; " + "; ".join(problems))


def test_batches(data) -> Iterable:
    """The evaluation batches of ``data``: its ``.test`` split if it has one, else ``data`` itself."""
    return getattr(data, "test", data)


def batches_for(data, recipe: Recipe) -> tuple[Batches, Batches]:
    """Train and test batches of a ``load_fashion_mnist`` result, re-batched, seeded and augmented as ``recipe``
    says."""
    return data.train.rebatch(recipe.batch_size, seed=recipe.seed).augmented(recipe.augmentation), data.test


def accuracy(batches: Iterable, count_correct: Callable) -> float:
    """Fraction of correct predictions over ``batches``; ``count_correct(images, labels)`` gives an int."""
    correct = total = 0
    for images, labels in batches:
        correct += int(count_correct(images, labels))
        total += int(labels.shape[0])
        distributed.heartbeat()
    if total == 0:
        raise ValueError("cannot evaluate on an empty data set")
    return correct / total


def _resume(engine: Engine, folder: Path, recipe: Recipe, run: dict, log: Callable) -> tuple[int, History]:
    path = checkpoint.latest(folder)
    if path is None:
        log(f"no checkpoint in {folder}: starting from epoch 1")
        return 0, History()
    arrays, meta = checkpoint.read(path)
    checkpoint.check_meta(path, meta, recipe.epochs)
    # a checkpoint written before a config or recipe field was recorded has that field's default
    defaults = {f.name: f.default for kind in (ModelConfig, Recipe) for f in fields(kind)
                if f.default is not MISSING}
    saved = defaults | meta["run"] | {k: v for k, v in meta["recipe"].items() if k != "epochs"}
    wanted = json.loads(json.dumps(run | {k: v for k, v in asdict(recipe).items() if k != "epochs"}))
    differs = sorted(k for k in wanted if saved.get(k) != wanted[k])
    if differs:
        raise checkpoint.CheckpointError(
            f"{path} belongs to another run (it differs in {', '.join(differs)}); "
            "use another folder, or replace that run (overwrite=True, --overwrite)")
    engine.load_state(arrays)
    log(f"resumed from {path} (epoch {meta['epoch']})")
    return meta["epoch"], History(meta["history"])


def _fresh(folder: Path, overwrite: bool) -> None:
    """Refuse to start a new run over an earlier run's checkpoints, or delete them when ``overwrite``: mixed
    in, they would pass for this run's epochs, and keeping the newest two would delete this run's."""
    earlier = checkpoint.list_checkpoints(folder)
    if earlier and not overwrite:
        raise checkpoint.CheckpointError(
            f"{folder} holds an earlier run's checkpoints (up to {earlier[-1].name}); resume it "
            "(resume=True, --resume) or replace it (overwrite=True, --overwrite)")
    run_folder.remove(earlier)


def _begin(engine: Engine, folder: Path | None, recipe: Recipe, run: dict, resume: bool, overwrite: bool,
           chief: bool, log: Callable) -> tuple[int, History]:
    """(epochs done, history so far): a resumed run's from its checkpoint, after checking it is this run's;
    a new run's nothing, after the chief has cleared or refused an earlier run's checkpoints."""
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True exclude each other: continue the run or replace it")
    if resume:
        if folder is None:
            raise ValueError("resume=True needs a checkpoint_dir")
        return _resume(engine, folder, recipe, run, log)
    if folder is not None and chief:
        _fresh(folder, overwrite)
    return 0, History()


def fit(engine: Engine, train: Batches, test: Batches, recipe: Recipe, *, run: dict,
        checkpoint_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
        progress: bool = True, log: Callable[[str], None] = print,
        on_start: Callable[[int], None] | None = None) -> History:
    """Train for ``recipe.epochs`` epochs; checkpoint after each; stop on a non-finite loss.

    ``train.epoch(k)`` gives the batches of epoch ``k`` (shuffled reproducibly), as a resumed run needs;
    ``run`` describes the model and backend and must match when resuming. ``checkpoint_dir`` is locked for
    the run (a second run there fails at once), and an earlier run's checkpoints in it are refused unless
    ``resume`` continues that run or ``overwrite`` deletes them. ``on_start(epochs_done)`` is called once
    those checks have passed, before the first step: what records a run is written there, not before.
    """
    world = getattr(engine, "world", distributed.SINGLE)
    distributed.check_split(world.replicas, train.batch_size, train.num_examples, train.drop_last)
    if not world.is_chief:
        log = lambda _: None  # noqa: E731  (every worker computes the same lines; the chief prints them)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    writer = folder if world.is_chief else None  # one checkpoint set, the chief's
    with run_folder.locked(writer, f"checkpoint_dir {writer}") if writer else contextlib.nullcontext():
        start, history = _begin(engine, folder, recipe, run, resume, overwrite, world.is_chief, log)
        if on_start is not None:
            on_start(start)
        _epochs(engine, train.sharded(world.rank, world.processes), test, recipe, run, folder, writer, start,
                history, progress, log)
    return history


@dataclass(frozen=True)
class Step:
    """One training step as :func:`loop`'s ``on_step`` hook sees it."""

    done: int  # steps taken since the first of epoch 1, this one included
    epoch: int  # 0-based
    loss: float  # this step's mean loss
    train_s: float  # seconds of training steps since the loop started, the hooks' own time left out


@dataclass(frozen=True)
class Epoch:
    """One complete epoch as :func:`loop`'s ``on_epoch`` hook sees it."""

    epoch: int  # 0-based
    loss: float  # the mean training loss over its examples
    accuracy: float  # the fraction of its training examples predicted right
    examples: int
    train_s: float  # seconds of its training steps, the hooks' own time left out
    began: float  # ``time.perf_counter()`` at its start


def loop(engine: Engine, train: Batches, recipe: Recipe, *, start: int = 0,
         on_step: Callable[[Step], bool] | None = None, on_epoch: Callable[[Epoch], None] | None = None,
         progress: bool = False, folder: Path | None = None) -> None:
    """The training loop, for ``vgg train`` and ``vgg race`` alike: epochs ``start`` to ``recipe.epochs`` of
    ``train`` (``train.epoch(k)``), each reseeded with ``recipe.epoch_seed``, every step at its global step's
    ``recipe.lr_at``, a heartbeat after each, TrainingDiverged on a non-finite loss (naming the last
    checkpoint in ``folder``). ``on_step`` runs after every step and stops the loop by returning True;
    ``on_epoch`` runs after every complete epoch; ``progress`` shows a bar per epoch (the chief's)."""
    world = getattr(engine, "world", distributed.SINGLE)
    steps = len(train)
    trained = 0.0  # seconds of training steps in the epochs before this one
    for epoch in range(start, recipe.epochs):
        engine.reseed(recipe.epoch_seed(epoch))
        loss_sum, correct, seen, hooks = 0.0, 0, 0, 0.0
        began = time.perf_counter()
        with tqdm(total=steps, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="step",
                  disable=not progress or not world.is_chief, leave=False, dynamic_ncols=True) as bar:
            for i, (images, labels) in enumerate(train.epoch(epoch)):
                lr = recipe.lr_at(epoch * steps + i, steps)
                loss, right = engine.step(images, labels, lr)
                distributed.heartbeat()
                if not math.isfinite(loss):
                    kept = checkpoint.latest(folder) if folder else None
                    raise TrainingDiverged(
                        f"loss became {loss} at epoch {epoch + 1}, step {i + 1} (lr {lr:g}); training stopped"
                        + (f", last good checkpoint {kept} is intact" if kept else "") + ": try a smaller --lr")
                n = int(labels.shape[0]) * world.processes
                loss_sum, correct, seen = loss_sum + loss * n, correct + right, seen + n
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}",
                                ex_per_s=f"{seen / (time.perf_counter() - began - hooks):.1f}", refresh=False)
                if on_step is not None:
                    called = time.perf_counter()
                    stop = on_step(Step(epoch * steps + i + 1, epoch, loss, trained + called - began - hooks))
                    hooks += time.perf_counter() - called
                    if stop:
                        return
        train_s = time.perf_counter() - began - hooks
        trained += train_s
        if on_epoch is not None:
            on_epoch(Epoch(epoch, loss_sum / seen, correct / seen, seen, train_s, began))


def _epochs(engine: Engine, train: Batches, test: Batches, recipe: Recipe, run: dict, folder: Path | None,
            writer: Path | None, start: int, history: History, progress: bool, log: Callable) -> None:
    """Epochs ``start`` to ``recipe.epochs`` of :func:`fit` through :func:`loop`, each evaluated on ``test``
    and appended to ``history``; the chief checkpoints each into ``writer``."""
    world = getattr(engine, "world", distributed.SINGLE)

    def evaluated(done: Epoch) -> None:
        with tqdm(test, total=len(test), desc=f"evaluating {done.epoch + 1}/{recipe.epochs}", unit="batch",
                  disable=not progress or not world.is_chief, leave=False, dynamic_ncols=True) as shown:
            test_acc = engine.evaluate(shown)
        history.append(epoch=done.epoch + 1, train_loss=done.loss, train_acc=done.accuracy, test_acc=test_acc,
                       examples_per_sec=done.examples / done.train_s, seconds=time.perf_counter() - done.began)
        log(f"epoch {done.epoch + 1}/{recipe.epochs}: {history.line()}")
        if writer is not None:
            meta = {"epoch": done.epoch + 1, "recipe": asdict(recipe), "run": run, "history": history.rows,
                    "world": {"processes": world.processes, "devices": world.devices}}
            checkpoint.write(writer, done.epoch + 1, engine.state(), meta)

    loop(engine, train, recipe, start=start, on_epoch=evaluated, progress=progress, folder=folder)


def train(backend: str, engine: Callable[[Any, Recipe], Engine], model, data, *,
          checkpoint_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
          progress: bool = True, log: Callable[[str], None] = print,
          on_start: Callable[[int], None] | None = None, **recipe: Any) -> History:
    """Every backend's ``train(model, data, *, ...)`` (bound to its name and Engine class): train ``model``
    on ``data`` (from ``load_fashion_mnist``) with minibatch SGD and return the :class:`History`.

    ``recipe``: any field of :class:`Recipe` (epochs=10, lr=0.05, batch_size=128, seed=0, momentum=0,
    weight_decay=0, schedule="constant", warmup_epochs=0, crop_padding=0, flip=False, label_smoothing=0,
    test_flip=False); ``checkpoint_dir`` gets a checkpoint per epoch and
    is locked for the run, ``resume=True`` continues from its last complete one, ``overwrite=True`` deletes
    an earlier run's checkpoints there (without either, they are refused); ``on_start``: see :func:`fit`.
    """
    chosen = Recipe(**recipe)
    train_batches, test_batches = batches_for(data, chosen)
    return fit(engine(model, chosen), train_batches, test_batches, chosen, run=run_info(backend, model),
               checkpoint_dir=checkpoint_dir, resume=resume, overwrite=overwrite, progress=progress, log=log,
               on_start=on_start)
