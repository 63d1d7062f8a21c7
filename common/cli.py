"""The ``vgg`` command: one CLI for all four backends. Errors are one line and a non-zero exit."""

from __future__ import annotations

import argparse
import sys

from common import arch, backends, summary


def _summary(args: argparse.Namespace) -> None:
    blocks = arch.by_name(args.arch)
    arch.check_resolution(blocks, args.resize)
    for name in args.backends:
        vgg = backends.load(name)
        model = vgg.VGG(blocks, image_size=args.resize)
        shape = summary.from_nchw((1, 1, args.resize, args.resize), vgg.LAYOUT)
        print(f"== {name} ({vgg.LAYOUT}), {vgg.parameter_count(model):,} parameters")
        vgg.print_layer_summary(model, shape)


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
    s.add_argument("--arch", default="vgg11", choices=[*arch.NAMED, "small"])
    s.add_argument("--resize", type=int, default=224, help="input side in pixels")
    s.set_defaults(run=_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (arch.ArchError, backends.BackendError, ValueError, OSError) as exc:
        print(f"vgg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vgg {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
