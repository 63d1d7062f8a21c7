"""The ``vgg`` command: one CLI for all four backends. Errors are one line and a non-zero exit."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import NoReturn
from pathlib import Path

from common.core import arch, atomic, backends, layouts, precision, summary
from common.core.config import MAX_IMAGE_SIZE, MAX_SEED, ModelConfig
from common.core.precision import PrecisionError, PrecisionWarning
from common.data import batches, fashion_mnist
from common.runtime import capability, distributed, run_folder, training
from common.serving import export_flow, formats, image_files, signing
from common.tools import compare, launch, loading, models, parity, parity_distributed, parity_onnx, predict, results, sandbox
from common.tools import parity_record, records
from common.tools import train_record


def _summary(args: argparse.Namespace) -> None:
    blocks, batch_norm = arch.parse(args.arch)
    arch.check_resolution(blocks, args.resize)
    if args.family:
        print(f"Table 1's configurations at {args.resize}x{args.resize}, {args.in_channels} input channel(s), "
              f"{args.num_classes} classes\n")
        print(summary.family_table(arch.CONFIGS, args.in_channels, args.resize, args.num_classes))
        return
    if args.flops:
        print(f"{args.arch} at {args.resize}x{args.resize}, {args.in_channels} input channel(s), {args.num_classes} "
              f"classes (common's analysis, which every backend is tested against)\n")
        print(summary.flops_table(blocks, args.in_channels, args.resize, args.num_classes, batch_norm, args.hidden))
        return
    for name in args.backends:
        vgg = loading.backend(name)
        model = vgg.VGG(blocks, image_size=args.resize, batch_norm=batch_norm, hidden=args.hidden)
        shape = layouts.shape_from_nchw((1, 1, args.resize, args.resize), vgg.LAYOUT)
        print(f"== {name} ({vgg.LAYOUT}), {vgg.parameter_count(model):,} parameters")
        vgg.print_layer_summary(model, shape)


#: what ``vgg train`` writes into --out; any of it there means an earlier run
RUN_FILES = ("run.json", "history.*", "model.*", "checkpoints")


def _writable_out(out: Path) -> Path:
    """Create ``out`` and prove it writable."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as exc:
        raise OSError(f"--out {out} is not writable ({exc.strerror or exc})") from None
    return out


def _earlier_run(out: Path, args: argparse.Namespace) -> list[Path]:
    """An earlier run's files in ``out``, refused unless --resume continues that run or --overwrite replaces
    it: a new run would otherwise mix its record with that run's files or silently replace them."""
    found = run_folder.earlier(out, RUN_FILES)
    if found and not (args.resume or args.overwrite):
        raise ValueError(f"--out {out} already holds a run ({', '.join(p.name for p in found)}); pass --resume to "
                         "continue it, --overwrite to replace it, or choose another --out")
    return found


@contextlib.contextmanager
def _holding(out: Path, args: argparse.Namespace, clear: bool = True) -> Iterator[None]:
    """``out`` locked for the block, with an earlier run's files refused, or (``clear`` and --overwrite)
    removed first."""
    with run_folder.locked(out, f"--out {out}"):
        earlier = _earlier_run(out, args)
        if clear and args.overwrite:
            run_folder.remove(earlier)
        yield


def _record(out: Path, args: argparse.Namespace, world: distributed.World) -> None:
    """Write run.json (the command's settings and the world): called once the run has really started, so a
    refused --resume leaves the record of the run it would have continued as it was."""
    settings = {k: v for k, v in vars(args).items() if k not in ("run", "argv")}
    settings["world"] = {"processes": world.processes, "devices": world.devices, "threads": world.threads,
                         "engine": world.engine}
    atomic.write_text(out / "run.json", json.dumps(settings, indent=1))


def _world_args(args: argparse.Namespace) -> tuple[int, int]:
    """(worker processes, devices per process) after checking what this backend's engines allow; a
    worker started by a launcher (ours, torchrun, a cluster's) takes the process count from its env."""
    launched = distributed.launched_size(args.backend)
    if launched > 1 and args.workers not in (1, launched):
        raise distributed.DistributedError(
            f"--workers {args.workers} but the launcher started {launched} workers; leave --workers out")
    workers = launched if launched > 1 else args.workers
    distributed.check_request(args.backend, workers, args.devices, args.device)
    return workers, args.devices


def _train(args: argparse.Namespace) -> int:
    blocks, batch_norm = arch.parse(args.arch)
    arch.check_resolution(blocks, args.resize)
    recipe = training.Recipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                             momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                             warmup_epochs=args.warmup_epochs)
    workers, devices = _world_args(args)
    note = capability.check(args.backend, args.precision, args.device)  # a refusal comes before anything is written
    threads = distributed.threads_per_worker(workers, devices, args.threads)
    launcher = workers > 1 and distributed.launched_size(args.backend) == 1
    if workers * devices > 1:  # every worker must get an equal share of every batch: check before starting
        images = fashion_mnist.load_split("train", args.data_dir, verify=not args.no_verify)[0]
        count = min(len(images), args.limit) if args.limit else len(images)
        distributed.check_split(workers * devices, args.batch_size, count)
    if launcher:  # the workers' private network has no route out: any download happens here, first
        fashion_mnist.load_split("test", args.data_dir, verify=not args.no_verify)
        if args.port:
            launch.check_port(args.port, args.backend)
        if args.device != "cpu":  # a missing GPU is refused here, once, rather than in every worker
            loading.backend(args.backend).init_distributed(devices=devices, device=args.device)
        with _holding(_writable_out(Path(args.out)), args, clear=False):
            pass  # a held --out or an earlier run is refused here, once; the chief worker locks and clears it
        print(f"vgg train: {args.backend} on {workers} worker processes x {devices} device(s), {threads} "
              f"thread(s) each, launched by {backends.BACKENDS[args.backend].launcher}")
        return launch.launch(args.backend, "common.tools.cli", args.argv, workers, threads=threads, port=args.port,
                             prog="vgg train", stall_timeout=args.stall_timeout)
    os.environ.setdefault("VGG_THREADS", str(threads))
    vgg = loading.backend(args.backend)
    world = vgg.init_distributed(devices=devices, device=args.device)
    out = _writable_out(Path(args.out))
    with _holding(out, args) if world.is_chief else contextlib.nullcontext():
        return _run(args, vgg, world, out, recipe, note, blocks, batch_norm)


def _run(args: argparse.Namespace, vgg, world: distributed.World, out: Path, recipe: training.Recipe,
         note: str | None, blocks, batch_norm: bool) -> int:
    """Train in this process (the only worker or one of several); the chief writes the run's files."""
    data = vgg.load_fashion_mnist(args.batch_size, resize=args.resize, data_dir=args.data_dir, seed=args.seed,
                                  limit=args.limit, eval_limit=args.eval_limit, verify=not args.no_verify)
    with _noted(note, "vgg train", world.is_chief):
        model = vgg.VGG(blocks, image_size=args.resize, seed=args.seed, batch_norm=batch_norm, hidden=args.hidden,
                        precision=args.precision)
    if world.is_chief:
        print(f"vgg train: {args.backend}, {args.arch} at {args.resize}x{args.resize} in {args.precision}, "
              f"{vgg.parameter_count(model):,} parameters, {data.train.num_examples:,} training and "
              f"{data.test.num_examples:,} test examples -> {out}")
        print(f"vgg train: {world.describe()}")
    history = vgg.train(model, data, **{k: getattr(recipe, k) for k in training.Recipe.__dataclass_fields__},
                        checkpoint_dir=out / "checkpoints", resume=args.resume, overwrite=args.overwrite,
                        progress=not args.no_progress,
                        on_start=(lambda _: _record(out, args, world)) if world.is_chief else None)
    if world.is_chief:
        history.save(out)
        model_path = vgg.save(model, out / f"model{vgg.MODEL_SUFFIX}")
        print(f"vgg train: wrote {out / 'history.json'}, history.csv, history.png and {model_path.name}")
        try:  # the run's final figures as a record (docs/results.md); a checkout without git has no commit to name
            print(f"vgg train: wrote the record {train_record.write(out).name}")
        except records.RecordError as exc:
            print(f"vgg train: no record written: {exc}", file=sys.stderr)
    return 0


def _parity(args: argparse.Namespace) -> int:
    blocks, batch_norm = arch.parse(args.arch)
    arch.check_resolution(blocks, args.resize)
    if (args.precision != "fp32" or args.device != "cpu") and (args.workers > 1 or args.onnx):
        raise ValueError(f"--precision {args.precision} --device {args.device}: --workers and --onnx compare "
                         "float32 on the CPU (exports are made from the float32 master weights)")
    if args.workers > 1:
        return _parity_workers(args)
    notes = [capability.check(name, args.precision, args.device) for name in args.backends]
    modules = {name: loading.backend(name) for name in args.backends}
    _on_gpus(args.backends, args.device)
    if args.onnx:
        return _parity_onnx(args, modules, blocks, batch_norm)
    if len(modules) < 2:
        raise ValueError(f"--backends {','.join(args.backends)}: parity needs at least two backends")
    print(f"vgg parity: {args.arch} at {args.resize}x{args.resize} in {args.precision} on {args.device}, "
          f"batch {args.batch}, "
          f"{args.steps} SGD steps at lr {args.lr:g}, dropout off; backends {', '.join(modules)}")
    with _noted("; ".join(n for n in notes if n), "vgg parity"):
        config = ModelConfig(blocks, image_size=args.resize, seed=args.seed, batch_norm=batch_norm,
                             hidden=args.hidden, precision=args.precision)
        matrices = parity.run(modules, config, batch=args.batch, steps=args.steps, lr=args.lr,
                              log=lambda m: print(m, file=sys.stderr))
    for quantity, cells in matrices.items():
        print("\n" + parity.format_matrix(cells, quantity, args.precision))
    ok = parity.passed(matrices, args.precision)
    print("\nvgg parity: " + ("all pass" if ok else "FAILED: see the cells marked FAIL"))
    _parity_record(args, parity_record.of_run(args, matrices))
    return 0 if ok else 1


def _parity_record(args: argparse.Namespace, record: dict) -> None:
    """Write a vgg parity run's record into --out (default reports/parity-<time>), as vgg compare does."""
    out = Path(args.out or f"reports/parity-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"vgg parity: wrote {records.write(record, out)}")


def _parity_onnx(args: argparse.Namespace, modules: dict, blocks, batch_norm: bool) -> int:
    print(f"vgg parity: {args.arch} at {args.resize}x{args.resize}, batch {args.batch}: one set of weights "
          f"exported to ONNX by {', '.join(modules)}, run in ONNX Runtime")
    cells = parity_onnx.run(modules, blocks, args.resize, batch=args.batch, seed=args.seed, out=args.out,
                            log=lambda m: print(m, file=sys.stderr), batch_norm=batch_norm, hidden=args.hidden)
    print("\n" + parity.format_matrix(cells, "logits"))
    ok = parity.passed({"logits": cells})
    print("\nvgg parity: " + ("all pass" if ok else "FAILED: see the cells marked FAIL"))
    _parity_record(args, parity_record.of_run(args, {"logits": cells}))
    return 0 if ok else 1


def _parity_workers(args: argparse.Namespace) -> int:
    for name in args.backends:
        loading.backend(name)  # a missing framework is a one-line error before anything starts
    distributed.check_split(args.workers, args.batch, args.batch)
    print(f"vgg parity: {args.arch} at {args.resize}x{args.resize}, global batch {args.batch}, one process vs "
          f"{args.workers} worker processes (and {args.workers} devices of one process where the framework has "
          f"that); backends {', '.join(args.backends)}")
    report = parity_distributed.run(args.backends, args.arch, args.resize, args.workers, batch=args.batch,
                                    seed=args.seed, log=lambda m: print(m, file=sys.stderr), hidden=args.hidden)
    print("\n" + parity_distributed.format_report(report))
    ok = parity_distributed.passed(report)
    print("\nvgg parity: " + ("all pass" if ok else "FAILED: see the cells marked FAIL or FAILED"))
    _parity_record(args, parity_record.of_run(args, report=report))
    return 0 if ok else 1


def _compare(args: argparse.Namespace) -> int:
    if args.requests and not args.latency:
        raise ValueError(f"--requests {args.requests}: it counts the requests of --latency; give both")
    blocks = arch.parse(args.arch)[0]
    for size in args.resize:
        arch.check_resolution(blocks, size)
    command = "vgg " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["compare"] else \
        "vgg compare"
    for w in args.workers:
        distributed.check_split(w, args.batch_size, args.batch_size)
    notes = {}
    for name in args.backends:  # a refused pair is left out with its reason; the others run
        for p in args.precision:
            try:
                notes[name, p] = capability.check(name, p, args.device)
            except PrecisionError as exc:
                notes[name, p] = exc
    _on_gpus(args.backends, args.device)
    for note in dict.fromkeys(str(n) for n in notes.values() if n):
        print(f"vgg compare: note: {note}", file=sys.stderr)
    if all(isinstance(n, PrecisionError) for n in notes.values()):
        raise PrecisionError(f"--precision {','.join(args.precision)}: no backend of {','.join(args.backends)} "
                             "can run it here (see the notes above)")
    out = Path(args.out or f"reports/compare-{time.strftime('%Y%m%d-%H%M%S')}")
    _writable_out(out)
    report = compare.run(args.backends, args.arch, args.resize, args.batch_size, args.seconds, args.train_epochs,
                         out, data_dir=args.data_dir, verify=not args.no_verify, command=command,
                         workers=args.workers, pythons=args.python, hidden=args.hidden,
                         precisions=args.precision, device=args.device, rounds=args.rounds,
                         requests=(args.requests or compare.MIN_REQUESTS) if args.latency else 0,
                         refused={k: str(v) for k, v in notes.items() if isinstance(v, PrecisionError)})
    print(f"vgg compare: wrote {out / 'compare.json'}, compare.md and charts")
    return 0 if any("error" not in row for row in report["rows"]) else 1


def _check_images(data_dir: str | None, vgg, model, count: int = 64):
    """Real test images for checking an export, in the model's layout; None (a random batch) if the model
    is not a Fashion-MNIST one or the data is not on this machine."""
    if model.in_channels != 1:
        return None
    try:
        test = fashion_mnist.load_split("test", data_dir, download=False)[0][:count]
    except (OSError, ValueError) as exc:
        print(f"vgg export: no Fashion-MNIST test images ({exc}); checking on random images", file=sys.stderr)
        return None
    return layouts.with_channels(batches.to_float(test, model.image_size), vgg.LAYOUT)


def _beside(model: Path, suffix: str) -> Path:
    """The default export of ``model``: its own name with the export's ``suffix`` for its model suffix
    (``runs/a/model.pt`` -> ``runs/a/model.pt2``), so two files in one folder never export to one path."""
    known = {*formats.TRAINED.values(), *formats.NATIVE.values(), formats.ONNX, formats.WEIGHTS}
    own = max((k for k in known if model.name.endswith(k)), key=len)  # the file opened, so it has one
    return model.with_name((model.name[:-len(own)] or "model") + suffix)


def _export(args: argparse.Namespace) -> int:
    vgg, model = models.live(args.model, args.backend, args.arch, args.resize, args.device)
    backend = vgg.__name__.removeprefix("vgg_")
    out = Path(args.out) if args.out else _beside(Path(args.model), formats.export_suffix(backend, args.format))
    formats.check_export_path(out, backend, args.format)
    check = _check_images(args.data_dir, vgg, model)
    print(f"vgg export: {backend} {args.format} -> {out}")
    done = vgg.export(model, out, format=args.format, images=check)
    source = "Fashion-MNIST test images" if check is not None else "random images"
    print(f"vgg export: wrote {done.path} ({done.bytes / 1e6:.1f} MB) in {done.seconds:.1f} s; reloaded, it matches "
          f"the live model to {done.difference:.1e} (relative) on {done.checked} {source}")
    return 0


@contextlib.contextmanager
def _opened(args: argparse.Namespace) -> Iterator[models.Opened]:
    """An export (native or ONNX) opened in the confined child of :mod:`common.tools.sandbox`; a ``vgg train``
    file or safetensors, which are data read by this project's own code, in this process."""
    kind, _ = formats.kind(args.model)
    if kind not in ("native", "onnx"):
        yield models.open_model(args.model, args.backend, args.arch, args.resize, device=args.device)
        return
    with sandbox.Sandbox(args.model, args.backend, args.arch, args.resize, trust_model=args.trust_model,
                         device=args.device, max_memory=int(args.max_memory * 2**30),
                         time_limit=args.time_limit) as box:
        yield models.Opened(Path(args.model), kind, box.meta, box)


def _predict(args: argparse.Namespace) -> int:
    files = image_files.expand(args.images)
    with _opened(args) as opened:
        for result in predict.classify(opened, files, top=args.top, batch_size=args.batch_size,
                                       progress=not args.json and sys.stderr.isatty()):
            if args.json:
                print(json.dumps({k: v for k, v in result.items() if k != "shown"}))
            else:
                best = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in result["top"])
                print(f"{result['shown']}: {best}")
    return 0


def _trust(args: argparse.Namespace) -> int:
    for path in args.files:
        kind, _ = formats.kind(path)
        if kind != "native":
            raise formats.ModelFileError(f"{path}: a {kind} model file is data and loads without trust; vgg trust "
                                         f"signs native exports ({', '.join(formats.NATIVE.values())})")
        if not Path(path).exists():
            raise formats.ModelFileError(f"{path}: no such file or folder")
        signature = signing.sign(path)
        print(f"vgg trust: {path} ({kind}) is trusted by this user: signature {signature[:16]} in "
              f"{signing.config_dir() / signing.SIGNATURES}")
    return 0


_HIDDEN_HELP = "width of the two hidden dense layers (default 4096, the paper's; narrower for quick runs)"
_TRUST_HELP = ("load a native export even if it holds what vgg export never writes and could run code of the "
               "file's own (a .pt2's pickles or Python, a SavedModel's or symbol's foreign ops, a StableHLO "
               "module's custom calls): only for files from a source you trust; see docs/export.md")


_PRECISION_HELP = ("fp32 (float32, TF32 off), bf16 or fp16 (mixed: low-precision products over float32 master "
                   "weights; fp16 with loss scaling), tf32 (a GPU's TensorFloat-32 products)")


@contextlib.contextmanager
def _noted(note: str | None, prog: str, say: bool = True) -> Iterator[None]:
    """Print a precision's note as one line (when ``say``), and keep its warning from repeating it."""
    if note and say:
        print(f"{prog}: note: {note}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        yield


def _precisions(text: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    for name in names or [text]:
        if name not in precision.NAMES:
            raise argparse.ArgumentTypeError(f"--precision {text!r}: unknown precision {name!r}; choose from "
                                             f"{','.join(precision.NAMES)}")
    return names


def _integer(flag: str, low: int, high: int | None = None) -> Callable[[str], int]:
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


def _positive(flag: str) -> Callable[[str], int]:
    """An argparse type: an integer >= 1 (a count or a size)."""
    return _integer(flag, 1)


def _number(flag: str, allowed: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
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
_image_size = _integer("--resize", 1, MAX_IMAGE_SIZE)
_seed = _integer("--seed", 0, MAX_SEED)
_lr = _number("--lr", "a finite number above 0", lambda v: v > 0)


def _seconds(flag: str) -> Callable[[str], float]:
    """An argparse type: a duration, a finite number of seconds above 0."""
    return _number(flag, "a finite number of seconds above 0", lambda v: v > 0)


def _sizes(text: str) -> list[int]:
    """``--resize 224,96,56``: image sides, each one that ``--resize`` allows."""
    sizes = [_image_size(s) for s in text.split(",") if s.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"--resize {text!r}: expected sizes like 224,96,56")
    return sizes


def _counts(text: str) -> list[int]:
    """``--workers 1,2``: worker counts, each at least 1, sorted without repeats."""
    counts = sorted({_positive("--workers")(s) for s in text.split(",") if s.strip()})
    if not counts:
        raise argparse.ArgumentTypeError(f"--workers {text!r}: expected counts like 1,2")
    return counts


def _pythons(text: str) -> dict[str, str]:
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


def _backend_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in backends.NAMES:
            raise argparse.ArgumentTypeError(f"unknown backend {name!r}; choose from {','.join(backends.NAMES)}")
    return names


def _data_dir(text: str) -> str:
    """--data-dir, refused before anything runs unless it names an existing folder (a misspelling is
    neither ignored nor created to download into)."""
    try:
        fashion_mnist.data_folder(text, "--data-dir")
    except fashion_mnist.DataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _model_options(default_arch: str) -> argparse.ArgumentParser:
    """``--arch`` and ``--hidden``, in a parent of their own: argparse shares a parent's actions between the
    sub-commands, so one sub-command's ``set_defaults`` would change every other's default."""
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--arch", default=default_arch, choices=arch.CHOICES,
                       help=f"a Table 1 configuration, the book's small VGG or tiny (default {default_arch})")
    model.add_argument("--hidden", type=_positive("--hidden"), default=arch.HIDDEN, help=_HIDDEN_HELP)
    return model


def _parents() -> tuple[argparse.ArgumentParser, ...]:
    """The options several sub-commands share, each defined once: the backends to run, the model (arch and
    head width), the data folder, and what a canonical .safetensors model file needs to be built."""
    several = argparse.ArgumentParser(add_help=False)
    several.add_argument("--backends", type=_backend_list, default=list(backends.NAMES),
                         help=f"comma-separated, from {','.join(backends.NAMES)} (default: all)")
    model = _model_options("small")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", type=_data_dir, default=None,
                      help="an existing folder with the four Fashion-MNIST files, or to download them into "
                           "(default: $VGG_DATA_DIR, cache, system copy)")
    low = argparse.ArgumentParser(add_help=False)
    low.add_argument("--precision", default="fp32", choices=precision.NAMES, help=_PRECISION_HELP)
    placed = argparse.ArgumentParser(add_help=False)
    placed.add_argument("--device", default="cpu", choices=distributed.DEVICE_KINDS,
                        help="cpu, or gpu: the process's GPU (refused in one line where there is none)")
    weights = argparse.ArgumentParser(add_help=False)
    weights.add_argument("--backend", default=None, choices=backends.NAMES, help="for a .safetensors --model")
    weights.add_argument("--arch", default=None, choices=arch.CHOICES,
                         help="for a .safetensors --model (default small)")
    weights.add_argument("--resize", type=_image_size, default=None, help="for a .safetensors --model (default 224)")
    recipe = argparse.ArgumentParser(add_help=False)  # vgg train's and vgg race's training recipe
    recipe.add_argument("--lr", type=_lr, default=0.05, help="(peak) learning rate")
    recipe.add_argument("--batch-size", type=_positive("--batch-size"), default=128)
    recipe.add_argument("--momentum", type=_number("--momentum", "a number in [0, 1)", lambda v: 0 <= v < 1),
                        default=0.0)
    recipe.add_argument("--weight-decay", type=_number("--weight-decay", "a finite number >= 0", lambda v: v >= 0),
                        default=0.0)
    recipe.add_argument("--schedule", default="constant", choices=training.SCHEDULES)
    recipe.add_argument("--warmup-epochs", type=_number("--warmup-epochs", "a finite number >= 0",
                                                        lambda v: v >= 0), default=0.0)
    recipe.add_argument("--no-verify", action="store_true",
                        help="accept IDX files whose checksum is not Fashion-MNIST's (your own data)")
    recipe.add_argument("--limit", type=_positive("--limit"), default=None,
                        help="use only the first N training examples")
    recipe.add_argument("--eval-limit", type=_positive("--eval-limit"), default=None,
                        help="evaluate on only the first N test examples (default: all 10,000)")
    return several, model, data, weights, low, placed, recipe


class _Parser(argparse.ArgumentParser):
    """argparse with the command's own errors: one line on stderr (no usage block), exit status 2; its
    sub-command parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument (\S+): (?=\1 )", "", message)  # our checks name the option themselves
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    """The ``vgg`` command's parser (the docs' command lines are checked against it)."""
    several, model, data, weights, low, placed, recipe = _parents()
    p = _Parser(prog="vgg", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", parents=[several, _model_options("vgg11")],
                       help="print every backend's layer table for one arch")
    s.add_argument("--resize", type=_image_size, default=224, help="input side in pixels")
    s.add_argument("--flops", action="store_true", help="per layer: output shape, parameters and FLOPs, and the "
                   "convolutional vs fully connected split (no framework needed)")
    s.add_argument("--family", action="store_true", help="one line per configuration A-E: layers, parameters, FLOPs")
    s.add_argument("--in-channels", type=_positive("--in-channels"), default=1,
                   help="with --flops or --family (3 for the paper)")
    s.add_argument("--num-classes", type=_positive("--num-classes"), default=10,
                   help="with --flops or --family (1000 for the paper)")
    s.set_defaults(run=_summary)

    q = sub.add_parser("parity", parents=[several, model, low, placed],
                       help="compare logits, gradients and SGD steps between every pair of backends")
    q.add_argument("--resize", type=_image_size, default=56, help="input side in pixels (default 56)")
    q.add_argument("--batch", type=_positive("--batch"), default=8, help="images per batch")
    q.add_argument("--steps", type=_positive("--steps"), default=5, help="plain SGD steps of the trajectory check")
    q.add_argument("--lr", type=_lr, default=0.05)
    q.add_argument("--seed", type=_seed, default=0)
    q.add_argument("--workers", type=_positive("--workers"), default=1,
                   help="compare one process with W worker processes "
                   "(and W devices of one process) of every framework's data-parallel engine")
    q.add_argument("--onnx", action="store_true", help="export one set of weights to ONNX from every backend and "
                   "compare the files in ONNX Runtime, with each other and the NumPy oracle")
    q.add_argument("--out", default=None, help="the folder for the run's record (default reports/parity-<time>); "
                   "with --onnx a given --out keeps the ONNX files too")
    q.set_defaults(run=_parity)

    e = sub.add_parser("export", parents=[weights, data, placed],
                       help="write a trained model for serving: the framework's own format or ONNX",
                       description="Export a model for serving and check the file: it is reloaded (ONNX in ONNX "
                       "Runtime) and compared with the live model on Fashion-MNIST test images before it is "
                       "put in place.")
    e.add_argument("--model", required=True, help="a model file from vgg train (backend from its suffix) or a "
                   "canonical .safetensors (with --backend, --arch, --resize)")
    e.add_argument("--format", default="native", choices=formats.FORMATS,
                   help="native: .pt2 (torch), .savedmodel (tf), .jax_export (jax), .mxnet (mxnet); onnx: .onnx")
    e.add_argument("--out", default=None, help="the file or folder to write (default: model.<suffix> beside --model)")
    e.set_defaults(run=_export)

    r = sub.add_parser("predict", parents=[weights, placed], help="classify image files with any model file",
                       description="Classify PNG/JPEG files (or folders of them): grayscale, resized as the "
                       "loader resizes, top-k classes with probabilities per file.")
    r.add_argument("--model", required=True, help="a vgg train model, a native export, an .onnx file (run in "
                   "ONNX Runtime) or a canonical .safetensors (with --backend, --arch, --resize)")
    r.add_argument("images", nargs="+", help="image files or folders of them")
    r.add_argument("--top", type=_positive("--top"), default=3, help="classes to show per image (default 3)")
    r.add_argument("--batch-size", type=_positive("--batch-size"), default=64)
    r.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    r.add_argument("--trust-model", action="store_true", help=_TRUST_HELP)
    r.add_argument("--max-memory", type=_number("--max-memory", "a finite number of GiB above 0", lambda v: v > 0),
                   default=sandbox.DEFAULT_MAX_MEMORY / 2**30, metavar="GIB",
                   help="address-space cap of the process that opens and runs an export, in GiB (default "
                   f"{sandbox.DEFAULT_MAX_MEMORY / 2**30:g})")
    r.add_argument("--time-limit", type=_seconds("--time-limit"), default=sandbox.DEFAULT_TIME_LIMIT,
                   metavar="SECONDS", help="seconds that process may take to open the file or to answer one batch "
                   f"(default {sandbox.DEFAULT_TIME_LIMIT:g})")
    r.set_defaults(run=_predict)

    t = sub.add_parser("trust", help="trust native exports from elsewhere, as if vgg export had written them here",
                       description="Sign model files whose source you trust with this user's key (as jupyter trust "
                       "does): a native export loads only when signed. The static checks and the confined "
                       "process still apply.")
    t.add_argument("files", nargs="+", help="native exports (.pt2, .savedmodel, .jax_export, .mxnet)")
    t.set_defaults(run=_trust)

    c = sub.add_parser("compare", parents=[several, model, data, placed],
                       help="measure the backends side by side (the main job)")
    c.add_argument("--resize", type=_sizes, default=[224, 96, 56], help="image sides, e.g. 224,96,56")
    c.add_argument("--precision", type=_precisions, default=["fp32"], metavar="fp32,bf16,...",
                   help="a row per precision, each with its speed-up over the backend's fp32 row; " + _PRECISION_HELP)
    c.add_argument("--batch-size", type=_positive("--batch-size"), default=128)
    c.add_argument("--seconds", type=_seconds("--seconds"), default=20, help="measuring time per backend and size")
    c.add_argument("--train-epochs", type=_integer("--train-epochs", 0), default=0,
                   help="also train K epochs and report test accuracy (once, in round 1)")
    c.add_argument("--rounds", type=_positive("--rounds"), default=3,
                   help="interleaved rounds, every cell once per round; the report gives each figure's median "
                        "and range, and a difference within the ranges is a tie (default 3)")
    c.add_argument("--latency", action="store_true",
                   help="also measure batch-1 serving latency (p50, p90, p99) of every live model, its native "
                        "export and its ONNX export in ONNX Runtime")
    c.add_argument("--requests", type=_integer("--requests", compare.MIN_REQUESTS), default=None,
                   help=f"batch-1 requests per server with --latency (default and least {compare.MIN_REQUESTS})")
    c.add_argument("--no-verify", action="store_true", help=argparse.SUPPRESS)
    c.add_argument("--out", default=None, help="report folder (default reports/compare-<time>)")
    c.add_argument("--workers", type=_counts, default=[1],
                   help="worker counts, e.g. 1,2: a row per count on each framework's data-parallel engine")
    c.add_argument("--python", type=_pythons, default={}, metavar="BACKEND=PYTHON,...",
                   help="the interpreter of the environment that has a backend, e.g. "
                        "jax=.venv-modern/bin/python (default: this one)")
    c.set_defaults(run=_compare)

    t = sub.add_parser("train", parents=[model, data, low, recipe], help="train one backend on Fashion-MNIST", description=(
        "Train VGG on Fashion-MNIST. Defaults are the book's recipe (plain SGD, lr 0.05, batch 128); "
        "the recipe that reaches 0.91+ at 56x56 is --momentum 0.9 --lr 0.02 --schedule cosine --warmup-epochs 1."))
    t.add_argument("--backend", required=True, choices=backends.NAMES)
    t.add_argument("--resize", type=_image_size, default=224,
                   help="image side after bilinear resizing (default 224)")
    t.add_argument("--epochs", type=_positive("--epochs"), default=10)
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--out", required=True, help="run folder: history, plot, model, checkpoints")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from the last complete epoch in --out")
    again.add_argument("--overwrite", action="store_true",
                       help="replace an earlier run in --out (its files are deleted when this run starts)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (summary lines only)")
    t.add_argument("--workers", type=_positive("--workers"), default=1,
                   help="data-parallel worker processes on this machine, each on the framework's own engine")
    t.add_argument("--devices", type=_positive("--devices"), default=1,
                   help="devices inside each process (tf, jax, mxnet; CPU devices here, GPUs where present)")
    t.add_argument("--device", default="cpu", choices=distributed.DEVICE_KINDS)
    t.add_argument("--threads", type=_positive("--threads"), default=None,
                   help="threads per worker (default: cores / workers)")
    t.add_argument("--stall-timeout", type=_seconds("--stall-timeout"), default=launch.STALL_TIMEOUT_S,
                   metavar="SECONDS", help="with --workers: stop the job when no worker has printed a line or "
                   f"taken a training step for this long (default {launch.STALL_TIMEOUT_S:g})")
    t.add_argument("--port", type=_integer("--port", 1, 65535), default=None,
                   help="the coordinator's loopback port for --workers (default: a free one)")
    t.set_defaults(run=_train)

    results.add_parser(sub, _Parser)

    g = sub.add_parser("race", parents=[several, model, data, low, placed, recipe],
                       help="time to a target test accuracy: every backend from one recipe, over several seeds",
                       description="Race the backends to a test accuracy: a parity check of the raced model first, "
                       "then every backend and seed in its own process, interleaved by seed; the clock runs from "
                       "process start (docs/race.md).")
    g.add_argument("--target", type=_number("--target", "a test accuracy between 0 and 1", lambda v: 0 < v < 1),
                   default=0.90, help="test accuracy to reach (default 0.90)")
    g.add_argument("--resize", type=_image_size, default=56, help="image side after bilinear resizing (default 56)")
    g.add_argument("--seeds", type=_positive("--seeds"), default=3, help="runs per backend: seeds 0 to N-1 (default 3)")
    g.add_argument("--max-epochs", type=_positive("--max-epochs"), default=10,
                   help="the schedule's length: a run not at the target by then did not finish (default 10)")
    g.add_argument("--eval-every", type=_number("--eval-every", "a fraction of an epoch in (0, 1]",
                                                lambda v: 0 < v <= 1),
                   default=0.5, help="test accuracy every this fraction of an epoch (default 0.5)")
    g.add_argument("--out", default=None, help="report folder (default reports/race-<time>)")
    g.add_argument("--resume", action="store_true", help="continue the race in --out, keeping its finished runs")
    g.set_defaults(run=_race)
    return p


def _on_gpus(names: list[str], device: str) -> None:
    """Under ``--device gpu``, every backend of ``names`` on its GPU: a missing GPU (or GPU build) is one line
    here, before anything is written."""
    if device == "gpu":
        for name in names:
            loading.backend(name).init_distributed(device="gpu")


def _race(args: argparse.Namespace) -> int:
    from common.tools import race

    arch.check_resolution(arch.parse(args.arch)[0], args.resize)
    plan = race.settings(args)
    _on_gpus(plan["backends"], args.device)
    out = Path(args.out or f"reports/race-{time.strftime('%Y%m%d-%H%M%S')}")
    command = "vgg " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["race"] else "vgg race"
    report = race.run(plan, out, resume=args.resume, command=command, log=lambda line: print(line, flush=True))
    print(f"vgg race: wrote {out / 'race.json'}, race.md and charts")
    return 0 if any(r["status"] != "error" for r in report["runs"]) else 1


#: the commands that run a model in this process, whose frameworks raise errors of their own kinds
_RUNS_MODELS = ("predict", "export", "parity", "compare")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    args.argv = argv  # what a launcher passes on to each worker
    try:
        if hasattr(args, "data_dir"):  # $VGG_DATA_DIR too is refused before anything runs or is written
            fashion_mnist.check_named_folders(args.data_dir)
        status = args.run(args)
    except training.TrainingDiverged as exc:
        print(f"vgg {args.command}: error: {exc}", file=sys.stderr)
        return 3
    except BrokenPipeError:  # the reader went away (`vgg predict ... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (arch.ArchError, backends.BackendError, export_flow.ExportError, ValueError, OSError) as exc:
        print(f"vgg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a framework's own error while it runs a model (torch, XLA, MXNet, ONNX Runtime)
        if args.command not in _RUNS_MODELS:
            raise
        print(f"vgg {args.command}: error: {formats.first_line(exc, 400)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vgg {args.command}: interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
