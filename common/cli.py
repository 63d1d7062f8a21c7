"""The ``vgg`` command: one CLI for all four backends. Errors are one line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import tempfile
from pathlib import Path

from common import arch, atomic, backends, checkpoint, compare, parity, summary, training


def _summary(args: argparse.Namespace) -> None:
    blocks = arch.by_name(args.arch)
    arch.check_resolution(blocks, args.resize)
    for name in args.backends:
        vgg = backends.load(name)
        model = vgg.VGG(blocks, image_size=args.resize)
        shape = summary.from_nchw((1, 1, args.resize, args.resize), vgg.LAYOUT)
        print(f"== {name} ({vgg.LAYOUT}), {vgg.parameter_count(model):,} parameters")
        vgg.print_layer_summary(model, shape)


def _writable_out(out: Path, resume: bool) -> Path:
    """Create ``out`` and prove it writable; refuse to overwrite a previous run unless resuming."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as exc:
        raise OSError(f"--out {out} is not writable ({exc.strerror or exc})") from None
    if not resume and checkpoint.latest(out / "checkpoints"):
        raise ValueError(f"--out {out} already holds a run; pass --resume to continue it or choose another --out")
    return out


def _train(args: argparse.Namespace) -> None:
    blocks = arch.by_name(args.arch)
    arch.check_resolution(blocks, args.resize)
    recipe = training.Recipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                             momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                             warmup_epochs=args.warmup_epochs)
    out = _writable_out(Path(args.out), args.resume)
    vgg = backends.load(args.backend)
    data = vgg.load_fashion_mnist(args.batch_size, resize=args.resize, data_dir=args.data_dir, seed=args.seed,
                                  limit=args.limit, verify=not args.no_verify)
    model = vgg.VGG(blocks, image_size=args.resize, seed=args.seed)
    print(f"vgg train: {args.backend}, {args.arch} at {args.resize}x{args.resize}, "
          f"{vgg.parameter_count(model):,} parameters, {data.train.num_examples:,} training examples -> {out}")
    settings = {k: v for k, v in vars(args).items() if k != "run"}
    atomic.write_text(out / "run.json", json.dumps(settings, indent=1))
    history = vgg.train(model, data, **{k: getattr(recipe, k) for k in training.Recipe.__dataclass_fields__},
                        checkpoint_dir=out / "checkpoints", resume=args.resume, progress=not args.no_progress)
    history.save(out)
    model_path = vgg.save(model, out / f"model{vgg.MODEL_SUFFIX}")
    print(f"vgg train: wrote {out / 'history.json'}, history.csv, history.png and {model_path.name}")


def _parity(args: argparse.Namespace) -> int:
    blocks = arch.by_name(args.arch)
    arch.check_resolution(blocks, args.resize)
    modules = {name: backends.load(name) for name in args.backends}
    if len(modules) < 2:
        raise ValueError(f"--backends {','.join(args.backends)}: parity needs at least two backends")
    print(f"vgg parity: {args.arch} at {args.resize}x{args.resize}, batch {args.batch}, "
          f"{args.steps} SGD steps at lr {args.lr:g}, dropout off; backends {', '.join(modules)}")
    matrices = parity.run(modules, blocks, args.resize, batch=args.batch, steps=args.steps, lr=args.lr,
                          seed=args.seed, log=lambda m: print(m, file=sys.stderr))
    for quantity, cells in matrices.items():
        print("\n" + parity.format_matrix(cells, quantity))
    ok = parity.passed(matrices)
    print("\nvgg parity: " + ("all pass" if ok else "FAILED: see the cells marked FAIL"))
    return 0 if ok else 1


def _compare(args: argparse.Namespace) -> int:
    blocks = arch.by_name(args.arch)
    for size in args.resize:
        arch.check_resolution(blocks, size)
    out = Path(args.out or f"reports/compare-{time.strftime('%Y%m%d-%H%M%S')}")
    _writable_out(out, resume=True)
    command = "vgg " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["compare"] else \
        "vgg compare"
    report = compare.run(args.backends, args.arch, args.resize, args.batch_size, args.seconds, args.train_epochs,
                         out, data_dir=args.data_dir, verify=not args.no_verify, command=command)
    print(f"vgg compare: wrote {out / 'compare.json'}, compare.md and charts")
    return 0 if any("error" not in row for row in report["rows"]) else 1


def _sizes(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--resize {text!r}: expected sizes like 224,96,56") from None


def _backend_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in backends.NAMES:
            raise argparse.ArgumentTypeError(f"unknown backend {name!r}; choose from {','.join(backends.NAMES)}")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vgg", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="print every backend's layer table for one arch")
    s.add_argument("--backends", type=_backend_list, default=list(backends.NAMES))
    s.add_argument("--arch", default="vgg11", choices=arch.CHOICES)
    s.add_argument("--resize", type=int, default=224, help="input side in pixels")
    s.set_defaults(run=_summary)

    q = sub.add_parser("parity", help="compare logits, gradients and SGD steps between every pair of backends")
    q.add_argument("--backends", type=_backend_list, default=list(backends.NAMES))
    q.add_argument("--arch", default="small", choices=arch.CHOICES)
    q.add_argument("--resize", type=int, default=56, help="input side in pixels (default 56)")
    q.add_argument("--batch", type=int, default=8, help="images per batch")
    q.add_argument("--steps", type=int, default=5, help="plain SGD steps of the trajectory check")
    q.add_argument("--lr", type=float, default=0.05)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(run=_parity)

    c = sub.add_parser("compare", help="measure the backends side by side (the main job)")
    c.add_argument("--backends", type=_backend_list, default=list(backends.NAMES))
    c.add_argument("--arch", default="small", choices=arch.CHOICES)
    c.add_argument("--resize", type=_sizes, default=[224, 96, 56], help="image sides, e.g. 224,96,56")
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--seconds", type=float, default=20, help="measuring time per backend and size")
    c.add_argument("--train-epochs", type=int, default=0, help="also train K epochs and report test accuracy")
    c.add_argument("--data-dir", default=None)
    c.add_argument("--no-verify", action="store_true", help=argparse.SUPPRESS)
    c.add_argument("--out", default=None, help="report folder (default reports/compare-<time>)")
    c.set_defaults(run=_compare)

    t = sub.add_parser("train", help="train one backend on Fashion-MNIST", description=(
        "Train VGG on Fashion-MNIST. Defaults are the book's recipe (plain SGD, lr 0.05, batch 128); "
        "the recipe that reaches 0.91+ at 56x56 is --momentum 0.9 --lr 0.02 --schedule cosine --warmup-epochs 1."))
    t.add_argument("--backend", required=True, choices=backends.NAMES)
    t.add_argument("--arch", default="small", choices=arch.CHOICES)
    t.add_argument("--resize", type=int, default=224, help="image side after bilinear resizing (default 224)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--lr", type=float, default=0.05, help="(peak) learning rate")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--momentum", type=float, default=0.0)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--schedule", default="constant", choices=training.SCHEDULES)
    t.add_argument("--warmup-epochs", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data-dir", default=None, help="folder with the four Fashion-MNIST files "
                                                    "(default: $VGG_DATA_DIR, cache, system copy)")
    t.add_argument("--no-verify", action="store_true",
                   help="accept IDX files whose checksum is not Fashion-MNIST's (your own data)")
    t.add_argument("--limit", type=int, default=None, help="use only the first N training examples")
    t.add_argument("--out", required=True, help="run folder: history, plot, model, checkpoints")
    t.add_argument("--resume", action="store_true", help="continue from the last complete epoch in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (summary lines only)")
    t.set_defaults(run=_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status = args.run(args)
    except training.TrainingDiverged as exc:
        print(f"vgg {args.command}: error: {exc}", file=sys.stderr)
        return 3
    except (arch.ArchError, backends.BackendError, ValueError, OSError) as exc:
        print(f"vgg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vgg {args.command}: interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
