"""``vgg parity``: the backends against each other and the NumPy oracle (in-process, ``--onnx`` or
``--workers``), each path ending in one verdict line and a record in the report folder."""

from __future__ import annotations

import argparse
import sys

from common.core.config import ModelConfig
from common.runtime import capability, distributed
from common.runtime.contract import Backend
from common.tools import loading, parity, parity_distributed, parity_onnx, parity_record, records
from common.tools.arguments import model_config
from common.tools.commands import noted, on_gpus, report_folder


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """``vgg parity``: refuse what a path cannot compare, then run the path ``--workers``/``--onnx`` choose."""
    config = model_config(args)
    if (args.precision != "fp32" or args.device != "cpu") and (args.workers > 1 or args.onnx):
        raise ValueError(f"--precision {args.precision} --device {args.device}: --workers and --onnx compare "
                         "float32 on the CPU (exports are made from the float32 master weights)")
    if args.workers > 1:
        return _workers(args, config)
    notes = [capability.check(name, args.precision, args.device) for name in args.backends]
    modules = {name: loading.backend(name) for name in args.backends}
    on_gpus(args.backends, args.device)
    if args.onnx:
        return _onnx(args, modules, config)
    if len(modules) < 2:
        raise ValueError(f"--backends {','.join(args.backends)}: parity needs at least two backends")
    print(f"vgg parity: {args.arch} at {args.resize}x{args.resize} in {args.precision} on {args.device}, "
          f"batch {args.batch}, "
          f"{args.steps} SGD steps at lr {args.lr:g}, dropout off; backends {', '.join(modules)}")
    with noted("; ".join(n for n in notes if n), "vgg parity"):
        matrices = parity.run(modules, config, batch=args.batch, steps=args.steps, lr=args.lr, log=_log)
    bounds = parity.bounds_of(config, args.batch)
    for quantity, cells in matrices.items():
        print("\n" + parity.format_matrix(cells, quantity, args.precision, bounds[quantity]))
    return _verdict(args, parity.passed(matrices, args.precision, bounds),
                    parity_record.of_run(args, matrices, bounds=bounds))


def _verdict(args: argparse.Namespace, ok: bool, record: dict, marks: str = "FAIL") -> int:
    """Print the verdict, write the run's record into the report folder, and give the exit status."""
    print("\nvgg parity: " + ("all pass" if ok else f"FAILED: see the cells marked {marks}"))
    print(f"vgg parity: wrote {records.write(record, report_folder(args.out, 'parity'))}")
    return 0 if ok else 1


def _onnx(args: argparse.Namespace, modules: dict[str, Backend], config: ModelConfig) -> int:
    print(f"vgg parity: {args.arch} at {args.resize}x{args.resize}, batch {args.batch}: one set of weights "
          f"exported to ONNX by {', '.join(modules)}, run in ONNX Runtime")
    cells = parity_onnx.run(modules, config, batch=args.batch, out=args.out, log=_log)
    print("\n" + parity.format_matrix(cells, "logits"))
    return _verdict(args, parity.passed({"logits": cells}), parity_record.of_run(args, {"logits": cells}))


def _workers(args: argparse.Namespace, config: ModelConfig) -> int:
    for name in args.backends:
        loading.backend(name)  # a missing framework is a one-line error before anything starts
    distributed.check_split(args.workers, args.batch, args.batch)
    print(f"vgg parity: {args.arch} at {args.resize}x{args.resize}, global batch {args.batch}, one process vs "
          f"{args.workers} worker processes (and {args.workers} devices of one process where the framework has "
          f"that); backends {', '.join(args.backends)}")
    report = parity_distributed.run(args.backends, config, args.workers, batch=args.batch, log=_log)
    print("\n" + parity_distributed.format_report(report))
    return _verdict(args, parity_distributed.passed(report), parity_record.of_run(args, report=report),
                    marks="FAIL or FAILED")
