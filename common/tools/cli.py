"""The ``vgg`` command: one CLI for all four backends. Errors are one line and a non-zero exit."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from common.core import arch, backends, layouts, summary
from common.core.config import ModelConfig
from common.core.precision import PrecisionError
from common.data import batches, fashion_mnist
from common.runtime import capability, distributed, nodes, training
from common.serving import export_flow, formats, image_files, signing
from common.tools import (
    arguments,
    compare,
    launch,
    loading,
    models,
    parity_command,
    predict,
    results,
    sandbox,
    train_command,
)
from common.tools.arguments import (
    counts,
    image_size,
    integer,
    lr,
    model_config,
    number,
    positive,
    precisions,
    pythons,
    seconds,
    seed,
    sizes,
)
from common.tools.commands import command_line, on_gpus, report_folder, writable_out


def _summary(args: argparse.Namespace) -> None:
    config = model_config(args)
    if args.family:
        print(f"Table 1's configurations at {args.resize}x{args.resize}, {args.in_channels} input channel(s), "
              f"{args.num_classes} classes\n")
        print(summary.family_table(arch.CONFIGS, args.in_channels, args.resize, args.num_classes))
        return
    if args.flops:
        print(f"{args.arch} at {args.resize}x{args.resize}, {args.in_channels} input channel(s), {args.num_classes} "
              f"classes (common's analysis, which every backend is tested against)\n")
        print(summary.flops_table(config.arch, args.in_channels, args.resize, args.num_classes, config.batch_norm,
                                  config.hidden))
        return
    for name in args.backends:
        vgg = loading.backend(name)
        model = vgg.VGG(config)
        shape = layouts.shape_from_nchw((1, 1, args.resize, args.resize), vgg.LAYOUT)
        print(f"== {name} ({vgg.LAYOUT}), {vgg.parameter_count(model):,} parameters")
        vgg.print_layer_summary(model, shape)


def _compare(args: argparse.Namespace) -> int:
    if args.requests and not args.latency:
        raise ValueError(f"--requests {args.requests}: it counts the requests of --latency; give both")
    # every size checked against the arch; compare.run gives each cell its own size and precision
    config, *_ = [model_config(args, image_size=size, precision=args.precision[0]) for size in args.resize]
    for w in args.workers:
        distributed.check_split(w, args.batch_size, args.batch_size)
    notes: dict[tuple[str, str], str | PrecisionError | None] = {}
    for name in args.backends:  # a refused pair is left out with its reason; the others run
        for p in args.precision:
            try:
                notes[name, p] = capability.check(name, p, args.device)
            except PrecisionError as exc:
                notes[name, p] = exc
    on_gpus(args.backends, args.device)
    for note in dict.fromkeys(str(n) for n in notes.values() if n):
        print(f"vgg compare: note: {note}", file=sys.stderr)
    if all(isinstance(n, PrecisionError) for n in notes.values()):
        raise PrecisionError(f"--precision {','.join(args.precision)}: no backend of {','.join(args.backends)} "
                             "can run it here (see the notes above)")
    out = writable_out(report_folder(args.out, "compare"))
    report = compare.run(args.backends, config, args.resize, args.batch_size, args.seconds, args.train_epochs, out,
                         data_dir=args.data_dir, verify=not args.no_verify, command=command_line("compare"),
                         workers=args.workers, pythons=args.python, precisions=args.precision, device=args.device,
                         rounds=args.rounds, requests=(args.requests or compare.MIN_REQUESTS) if args.latency else 0,
                         refused={k: str(v) for k, v in notes.items() if isinstance(v, PrecisionError)})
    print(f"vgg compare: wrote {out / 'compare.json'}, compare.md and charts")
    return 0 if any("error" not in row for row in report["rows"]) else 1


def _race(args: argparse.Namespace) -> int:
    from common.tools import race

    plan = race.settings(args, model_config(args))
    on_gpus(plan["backends"], args.device)
    out = report_folder(args.out, "race")
    report = race.run(plan, out, resume=args.resume, command=command_line("race"),
                      log=lambda line: print(line, flush=True))
    print(f"vgg race: wrote {out / 'race.json'}, race.md and charts")
    return 0 if any(r["status"] != "error" for r in report["runs"]) else 1


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


def _weights_config(args: argparse.Namespace) -> ModelConfig | None:
    """The config --arch and --resize give a canonical .safetensors --model (the file gives the head's
    width); None for any other model file, which records its own."""
    return model_config(args) if formats.kind(args.model)[0] == "weights" else None


def _export(args: argparse.Namespace) -> int:
    vgg, model = models.live(args.model, args.backend, _weights_config(args), args.device)
    backend = vgg.NAME
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
        yield models.open_model(args.model, args.backend, _weights_config(args), device=args.device)
        return
    with sandbox.Sandbox(args.model, args.backend, trust_model=args.trust_model, device=args.device,
                         max_memory=int(args.max_memory * 2**30), time_limit=args.time_limit) as box:
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


def parser() -> argparse.ArgumentParser:
    """The ``vgg`` command's parser (the docs' command lines are checked against it)."""
    several, model, data, weights, low, placed, recipe = arguments.parents()
    p = arguments.Parser(prog="vgg", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", parents=[several, arguments.model_options("vgg11")],
                       help="print every backend's layer table for one arch")
    s.add_argument("--resize", type=image_size, default=224, help="input side in pixels")
    s.add_argument("--flops", action="store_true", help="per layer: output shape, parameters and FLOPs, and the "
                   "convolutional vs fully connected split (no framework needed)")
    s.add_argument("--family", action="store_true", help="one line per configuration A-E: layers, parameters, FLOPs")
    s.add_argument("--in-channels", type=positive("--in-channels"), default=1,
                   help="with --flops or --family (3 for the paper)")
    s.add_argument("--num-classes", type=positive("--num-classes"), default=10,
                   help="with --flops or --family (1000 for the paper)")
    s.set_defaults(run=_summary)

    q = sub.add_parser("parity", parents=[several, model, low, placed],
                       help="compare logits, gradients and SGD steps between every pair of backends")
    q.add_argument("--resize", type=image_size, default=56, help="input side in pixels (default 56)")
    q.add_argument("--batch", type=positive("--batch"), default=8, help="images per batch")
    q.add_argument("--steps", type=positive("--steps"), default=5, help="plain SGD steps of the trajectory check")
    q.add_argument("--lr", type=lr, default=0.05)
    q.add_argument("--seed", type=seed, default=0)
    q.add_argument("--workers", type=positive("--workers"), default=1,
                   help="compare one process with W worker processes "
                   "(and W devices of one process) of every framework's data-parallel engine")
    q.add_argument("--onnx", action="store_true", help="export one set of weights to ONNX from every backend and "
                   "compare the files in ONNX Runtime, with each other and the NumPy oracle")
    q.add_argument("--out", default=None, help="the folder for the run's record (default reports/parity-<time>); "
                   "with --onnx a given --out keeps the ONNX files too")
    q.set_defaults(run=parity_command.run)

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
    r.add_argument("--top", type=positive("--top"), default=3, help="classes to show per image (default 3)")
    r.add_argument("--batch-size", type=positive("--batch-size"), default=64)
    r.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    r.add_argument("--trust-model", action="store_true", help=arguments.TRUST_HELP)
    r.add_argument("--max-memory", type=number("--max-memory", "a finite number of GiB above 0", lambda v: v > 0),
                   default=sandbox.DEFAULT_MAX_MEMORY / 2**30, metavar="GIB",
                   help="address-space cap of the process that opens and runs an export, in GiB (default "
                   f"{sandbox.DEFAULT_MAX_MEMORY / 2**30:g})")
    r.add_argument("--time-limit", type=seconds("--time-limit"), default=sandbox.DEFAULT_TIME_LIMIT,
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
    c.add_argument("--resize", type=sizes, default=[224, 96, 56], help="image sides, e.g. 224,96,56")
    c.add_argument("--precision", type=precisions, default=["fp32"], metavar="fp32,bf16,...",
                   help="a row per precision, each with its speed-up over the backend's fp32 row; "
                   + arguments.PRECISION_HELP)
    c.add_argument("--batch-size", type=positive("--batch-size"), default=128)
    c.add_argument("--seconds", type=seconds("--seconds"), default=20, help="measuring time per backend and size")
    c.add_argument("--train-epochs", type=integer("--train-epochs", 0), default=0,
                   help="also train K epochs and report test accuracy (once, in round 1)")
    c.add_argument("--rounds", type=positive("--rounds"), default=3,
                   help="interleaved rounds, every cell once per round; the report gives each figure's median "
                        "and range, and a difference within the ranges is a tie (default 3)")
    c.add_argument("--latency", action="store_true",
                   help="also measure batch-1 serving latency (p50, p90, p99) of every live model, its native "
                        "export and its ONNX export in ONNX Runtime")
    c.add_argument("--requests", type=integer("--requests", compare.MIN_REQUESTS), default=None,
                   help=f"batch-1 requests per server with --latency (default and least {compare.MIN_REQUESTS})")
    c.add_argument("--no-verify", action="store_true", help=argparse.SUPPRESS)
    c.add_argument("--out", default=None, help="report folder (default reports/compare-<time>)")
    c.add_argument("--workers", type=counts, default=[1],
                   help="worker counts, e.g. 1,2: a row per count on each framework's data-parallel engine")
    c.add_argument("--python", type=pythons, default={}, metavar="BACKEND=PYTHON,...",
                   help="the interpreter of the environment that has a backend, e.g. "
                        "jax=.venv-modern/bin/python (default: this one)")
    c.set_defaults(run=_compare)

    t = sub.add_parser("train", parents=[model, data, low, recipe], help="train one backend on Fashion-MNIST",
                       description="Train VGG on Fashion-MNIST. Defaults are the book's recipe (plain SGD, lr "
                       "0.05, batch 128); the recipe that reaches 0.91+ at 56x56 is --momentum 0.9 --lr 0.02 "
                       "--schedule cosine --warmup-epochs 1.")
    t.add_argument("--backend", required=True, choices=backends.NAMES)
    t.add_argument("--resize", type=image_size, default=224,
                   help="image side after bilinear resizing (default 224)")
    t.add_argument("--epochs", type=positive("--epochs"), default=10)
    t.add_argument("--seed", type=seed, default=0)
    t.add_argument("--out", required=True, help="run folder: history, plot, model, checkpoints")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from the last complete epoch in --out")
    again.add_argument("--overwrite", action="store_true",
                       help="replace an earlier run in --out (its files are deleted when this run starts)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (summary lines only)")
    t.add_argument("--workers", type=positive("--workers"), default=1,
                   help="data-parallel worker processes on this machine, each on the framework's own engine")
    t.add_argument("--devices", type=positive("--devices"), default=1,
                   help="devices inside each process (tf, jax, mxnet; CPU devices here, GPUs where present)")
    t.add_argument("--device", default="cpu", choices=distributed.DEVICE_KINDS)
    t.add_argument("--threads", type=positive("--threads"), default=None,
                   help="threads per worker (default: cores / workers)")
    t.add_argument("--stall-timeout", type=seconds("--stall-timeout"), default=launch.STALL_TIMEOUT_S,
                   metavar="SECONDS", help="with --workers: stop the job when no worker has printed a line or "
                   f"taken a training step for this long (default {launch.STALL_TIMEOUT_S:g})")
    t.add_argument("--port", type=integer("--port", 1, 65535), default=None,
                   help="the coordinator's loopback port for --workers (default: a free one); with --nodes the base "
                   f"of every port the job binds, the same on every node (default {nodes.DEFAULT_PORT})")
    t.add_argument("--nodes", metavar="ADDR,ADDR,...", default=None,
                   help="train across machines: every node's address, node 0 (the coordinator) first; start the "
                   "same command on every node with its own --node-rank (docs/distributed.md)")
    t.add_argument("--node-rank", type=integer("--node-rank", 0), default=None,
                   help="with --nodes: this machine's place in --nodes (0 runs the coordinator)")
    t.set_defaults(run=train_command.run)

    results.add_parser(sub, arguments.Parser)

    g = sub.add_parser("race", parents=[several, model, data, low, placed, recipe],
                       help="time to a target test accuracy: every backend from one recipe, over several seeds",
                       description="Race the backends to a test accuracy: a parity check of the raced model first, "
                       "then every backend and seed in its own process, interleaved by seed; the clock runs from "
                       "process start (docs/race.md).")
    g.add_argument("--target", type=number("--target", "a test accuracy between 0 and 1", lambda v: 0 < v < 1),
                   default=0.90, help="test accuracy to reach (default 0.90)")
    g.add_argument("--resize", type=image_size, default=56, help="image side after bilinear resizing (default 56)")
    g.add_argument("--seeds", type=positive("--seeds"), default=3, help="runs per backend: seeds 0 to N-1 (default 3)")
    g.add_argument("--max-epochs", type=positive("--max-epochs"), default=10,
                   help="the schedule's length: a run not at the target by then did not finish (default 10)")
    g.add_argument("--eval-every", type=number("--eval-every", "a fraction of an epoch in (0, 1]",
                                                lambda v: 0 < v <= 1),
                   default=0.5, help="test accuracy every this fraction of an epoch (default 0.5)")
    g.add_argument("--out", default=None, help="report folder (default reports/race-<time>)")
    g.add_argument("--resume", action="store_true", help="continue the race in --out, keeping its finished runs")
    g.set_defaults(run=_race)
    return p


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
