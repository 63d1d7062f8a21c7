"""The ``vgg`` command's arguments: the types that refuse a bad value in one line before anything runs, the
options several sub-commands share (argparse parent parsers), and the one ModelConfig they describe."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from typing import Any, NoReturn

from common.core import arch, backends, precision
from common.core.config import INITS, MAX_IMAGE_SIZE, MAX_SEED, ModelConfig
from common.data import fashion_mnist
from common.runtime import distributed, training

HIDDEN_HELP = "width of the two hidden dense layers (default 4096, the paper's; narrower for quick runs)"
TRUST_HELP = ("load a native export even if it holds what vgg export never writes and could run code of the "
              "file's own (a .pt2's pickles or Python, a SavedModel's or symbol's foreign ops, a StableHLO "
              "module's custom calls): only for files from a source you trust; see docs/export.md")
PRECISION_HELP = ("fp32 (float32, TF32 off), bf16 or fp16 (mixed: low-precision products over float32 master "
                  "weights; fp16 with loss scaling), tf32 (a GPU's TensorFloat-32 products)")

#: the ModelConfig field each option sets where a sub-command has it (``--arch`` sets arch and batch_norm);
#: a field no option sets keeps its default
CONFIG_OPTIONS = {"image_size": "resize", "seed": "seed", "hidden": "hidden", "precision": "precision",
                  "dropout": "dropout", "init": "init"}


def model_config(args: argparse.Namespace, **changes: Any) -> ModelConfig:
    """The model a sub-command's arguments describe: ``--arch``'s blocks and batch norm, and every field of
    CONFIG_OPTIONS whose option the sub-command has; ``changes`` replace fields (a compare cell's size)."""
    blocks, batch_norm = arch.parse(args.arch)
    given = {field: getattr(args, option) for field, option in CONFIG_OPTIONS.items()
             if getattr(args, option, None) is not None}
    return ModelConfig(blocks, batch_norm=batch_norm, **{**given, **changes})


class Parser(argparse.ArgumentParser):
    """argparse with the command's own errors: one line on stderr (no usage block), exit status 2; its
    sub-command parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument (\S+): (?=\1 )", "", message)  # our checks name the option themselves
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def precisions(text: str) -> list[str]:
    """``--precision fp32,bf16``: precision names, without repeats."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    for name in names or [text]:
        if name not in precision.NAMES:
            raise argparse.ArgumentTypeError(f"--precision {text!r}: unknown precision {name!r}; choose from "
                                             f"{','.join(precision.NAMES)}")
    return names


def integer(flag: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` (to ``high``), anything else refused in one line naming
    ``flag`` and what it allows, before anything runs."""
    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{flag} {text} is not allowed: it must be {allowed}")
        return value
    return parse


def positive(flag: str) -> Callable[[str], int]:
    """An argparse type: an integer >= 1 (a count or a size)."""
    return integer(flag, 1)


def number(flag: str, allowed: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse type: a finite number for which ``ok`` holds (NaN and infinities never pass), anything
    else refused in one line naming ``flag`` and what is ``allowed``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"{flag} {text} is not allowed: it must be {allowed}")
        return value
    return parse


#: ``--resize``: a side the arch's check then bounds from below, and MAX_IMAGE_SIZE from above
image_size = integer("--resize", 1, MAX_IMAGE_SIZE)
seed = integer("--seed", 0, MAX_SEED)
lr = number("--lr", "a finite number above 0", lambda v: v > 0)


def seconds(flag: str) -> Callable[[str], float]:
    """An argparse type: a duration, a finite number of seconds above 0."""
    return number(flag, "a finite number of seconds above 0", lambda v: v > 0)


def sizes(text: str) -> list[int]:
    """``--resize 224,96,56``: image sides, each one that ``--resize`` allows."""
    found = [image_size(s) for s in text.split(",") if s.strip()]
    if not found:
        raise argparse.ArgumentTypeError(f"--resize {text!r}: expected sizes like 224,96,56")
    return found


def counts(text: str) -> list[int]:
    """``--workers 1,2``: worker counts, each at least 1, sorted without repeats."""
    found = sorted({positive("--workers")(s) for s in text.split(",") if s.strip()})
    if not found:
        raise argparse.ArgumentTypeError(f"--workers {text!r}: expected counts like 1,2")
    return found


def pythons(text: str) -> dict[str, str]:
    """``--python jax=.venv-modern/bin/python,mxnet=.venv/bin/python``, or one path for every backend."""
    chosen = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        if name and name not in backends.NAMES:
            raise argparse.ArgumentTypeError(f"--python {item!r}: unknown backend {name!r}; "
                                             f"choose from {','.join(backends.NAMES)}")
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise argparse.ArgumentTypeError(f"--python {item!r}: {path!r} is not an executable file")
        path = os.path.abspath(path)  # children start in the project's folder
        chosen.update({name: path} if name else dict.fromkeys(backends.NAMES, path))
    return chosen


def backend_list(text: str) -> list[str]:
    """``--backends torch,jax``: backend names, each one this project has."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in backends.NAMES:
            raise argparse.ArgumentTypeError(f"unknown backend {name!r}; choose from {','.join(backends.NAMES)}")
    return names


def data_dir(text: str) -> str:
    """--data-dir, refused before anything runs unless it names an existing folder (a misspelling is
    neither ignored nor created to download into)."""
    try:
        fashion_mnist.data_folder(text, "--data-dir")
    except fashion_mnist.DataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def model_options(default_arch: str) -> Parser:
    """``--arch``, ``--hidden``, ``--dropout`` and ``--init``, in a parent of their own: argparse shares a parent's
    actions between the sub-commands, so one sub-command's ``set_defaults`` would change every other's default."""
    model = Parser(add_help=False)
    model.add_argument("--arch", default=default_arch, choices=arch.CHOICES,
                       help=f"a Table 1 configuration, the book's small VGG or tiny (default {default_arch})")
    model.add_argument("--hidden", type=positive("--hidden"), default=arch.HIDDEN, help=HIDDEN_HELP)
    model.add_argument("--dropout", type=number("--dropout", "a probability from 0 to below 1", lambda p: 0 <= p < 1),
                       default=ModelConfig.dropout, help="dropout probability of the dense layers (default "
                       f"{ModelConfig.dropout:g}); 0 makes a distributed run follow one process exactly")
    model.add_argument("--init", default="xavier", choices=INITS,
                       help="how the weights start: xavier (Glorot uniform, the book's; default) or torchvision "
                            "(He-normal convolutions, N(0, 0.01) dense layers, as torchvision's VGG)")
    return model


def parents() -> tuple[Parser, ...]:
    """The options several sub-commands share, each defined once: the backends to run, the model (arch and
    head width), the data folder, what a canonical .safetensors model file needs to be built, the precision,
    the device and the training recipe."""
    several = Parser(add_help=False)
    several.add_argument("--backends", type=backend_list, default=list(backends.NAMES),
                         help=f"comma-separated, from {','.join(backends.NAMES)} (default: all)")
    model = model_options("small")
    data = Parser(add_help=False)
    data.add_argument("--data-dir", type=data_dir, default=None,
                      help="an existing folder with the four Fashion-MNIST files, or to download them into "
                           "(default: $VGG_DATA_DIR, cache, system copy)")
    low = Parser(add_help=False)
    low.add_argument("--precision", default="fp32", choices=precision.NAMES, help=PRECISION_HELP)
    placed = Parser(add_help=False)
    placed.add_argument("--device", default="cpu", choices=distributed.DEVICE_KINDS,
                        help="cpu, or gpu: the process's GPU (refused in one line where there is none)")
    weights = Parser(add_help=False)
    weights.add_argument("--backend", default=None, choices=backends.NAMES, help="for a .safetensors --model")
    weights.add_argument("--arch", default="small", choices=arch.CHOICES,
                         help="for a .safetensors --model (default small)")
    weights.add_argument("--resize", type=image_size, default=224, help="for a .safetensors --model (default 224)")
    recipe = Parser(add_help=False)  # vgg train's and vgg race's training recipe
    recipe.add_argument("--lr", type=lr, default=0.05, help="(peak) learning rate")
    recipe.add_argument("--batch-size", type=positive("--batch-size"), default=128)
    recipe.add_argument("--momentum", type=number("--momentum", "a number in [0, 1)", lambda v: 0 <= v < 1),
                        default=0.0)
    recipe.add_argument("--weight-decay", type=number("--weight-decay", "a finite number >= 0", lambda v: v >= 0),
                        default=0.0)
    recipe.add_argument("--schedule", default="constant", choices=training.SCHEDULES)
    recipe.add_argument("--warmup-epochs", type=number("--warmup-epochs", "a finite number >= 0", lambda v: v >= 0),
                        default=0.0)
    recipe.add_argument("--crop-padding", type=integer("--crop-padding", 0, 8), default=0,
                        help="train on random crops of the images padded by N pixels (torchvision's RandomCrop "
                             "with padding; default 0: none)")
    recipe.add_argument("--flip", action="store_true", help="train on a random horizontal flip of half the images")
    recipe.add_argument("--label-smoothing", type=number("--label-smoothing", "a number in [0, 1)",
                                                         lambda v: 0 <= v < 1), default=0.0,
                        help="the loss's targets (1 - A) one-hot + A / 10, as torch's cross_entropy (default 0)")
    recipe.add_argument("--test-flip", action="store_true",
                        help="evaluate on the mean logits of each test image and its mirror image")
    recipe.add_argument("--no-verify", action="store_true",
                        help="accept IDX files whose checksum is not Fashion-MNIST's (your own data)")
    recipe.add_argument("--limit", type=positive("--limit"), default=None,
                        help="use only the first N training examples")
    recipe.add_argument("--eval-limit", type=positive("--eval-limit"), default=None,
                        help="evaluate on only the first N test examples (default: all 10,000)")
    return several, model, data, weights, low, placed, recipe
