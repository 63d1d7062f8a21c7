"""``vgg train``: one backend trained on Fashion-MNIST into a run folder, in this process or in worker
processes started by the framework's launcher (each of which runs this command again)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from common.core import atomic, backends
from common.core.config import ModelConfig
from common.data import fashion_mnist
from common.runtime import capability, distributed, nodes, run_folder, training
from common.runtime.contract import Backend
from common.serving import formats
from common.tools import launch, loading, records, train_record
from common.tools.arguments import model_config
from common.tools.commands import noted, writable_out

#: what ``vgg train`` writes into --out; any of it there means an earlier run
RUN_FILES = ("run.json", "history.*", "model.*", "checkpoints")


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


def _world_args(args: argparse.Namespace) -> tuple[int, int, nodes.Nodes | None]:
    """(worker processes of the whole job, devices per process, the job's nodes if several) after checking
    what this backend's engines allow; a worker started by a launcher (ours, torchrun, a cluster's) takes
    the process count from its env."""
    if args.node_rank is not None and not args.nodes:
        raise distributed.DistributedError("--node-rank needs --nodes: every node's address, node 0 first")
    job = nodes.parse(args.nodes, args.node_rank, args.port) if args.nodes else None
    requested = args.workers * (job.count if job else 1)
    launched = distributed.launched_size(args.backend)
    if launched > 1 and args.workers != 1 and launched != requested:
        raise distributed.DistributedError(
            f"--workers {args.workers} but the launcher started {launched} workers; leave --workers out")
    workers = launched if launched > 1 else requested
    distributed.check_request(args.backend, workers, args.devices, args.device)
    return workers, args.devices, job


def run(args: argparse.Namespace) -> int:
    """``vgg train``: check everything that can be refused before anything is written, then train here or
    launch the workers."""
    config = model_config(args)
    recipe = training.Recipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                             momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                             warmup_epochs=args.warmup_epochs, crop_padding=args.crop_padding, flip=args.flip,
                             label_smoothing=args.label_smoothing, test_flip=args.test_flip)
    workers, devices, job = _world_args(args)
    note = capability.check(args.backend, args.precision, args.device)  # a refusal comes before anything is written
    here = workers // job.count if job else workers  # worker processes on this machine
    threads = distributed.threads_per_worker(here, devices, args.threads)
    launcher = (workers > 1 or job is not None) and distributed.launched_size(args.backend) == 1
    if workers * devices > 1:  # every worker must get an equal share of every batch: check before starting
        images = fashion_mnist.load_split("train", args.data_dir, verify=not args.no_verify)[0]
        count = min(len(images), args.limit) if args.limit else len(images)
        distributed.check_split(workers * devices, args.batch_size, count)
    if launcher:  # the workers' private network has no route out: any download happens here, first
        fashion_mnist.load_split("test", args.data_dir, verify=not args.no_verify)
        if job is not None:
            nodes.check_ports(job, args.backend, here)
            if args.backend == "jax":
                nodes.check_host_name(job)
        elif args.port:
            launch.check_port(args.port, args.backend)
        if args.device != "cpu":  # a missing GPU is refused here, once, rather than in every worker
            loading.backend(args.backend).init_distributed(devices=devices, device=args.device)
        if job is None or job.rank == 0:  # node 0 checks the shared --out; the others would race its chief
            with _holding(writable_out(Path(args.out)), args, clear=False):
                pass  # a held --out or an earlier run is refused here, once; the chief worker locks and clears it
        if job is not None:
            print(f"vgg train: {args.backend}, {job.describe()}: {here} worker process(es) here x {devices} "
                  f"device(s), {threads} thread(s) each, {workers} in the job")
            return launch.launch_node(args.backend, "common.tools.cli", args.argv, here, job, threads=threads,
                                      prog="vgg train", stall_timeout=args.stall_timeout)
        print(f"vgg train: {args.backend} on {workers} worker processes x {devices} device(s), {threads} "
              f"thread(s) each, launched by {backends.BACKENDS[args.backend].launcher}")
        return launch.launch(args.backend, "common.tools.cli", args.argv, workers, threads=threads, port=args.port,
                             prog="vgg train", stall_timeout=args.stall_timeout)
    os.environ.setdefault("VGG_THREADS", str(threads))
    vgg = loading.backend(args.backend)
    world = vgg.init_distributed(devices=devices, device=args.device)
    out = writable_out(Path(args.out))
    with _holding(out, args) if world.is_chief else contextlib.nullcontext():
        return _train(args, vgg, world, out, recipe, note, config)


def _train(args: argparse.Namespace, vgg: Backend, world: distributed.World, out: Path, recipe: training.Recipe,
           note: str | None, config: ModelConfig) -> int:
    """Train in this process (the only worker or one of several); the chief writes the run's files."""
    data = vgg.load_fashion_mnist(args.batch_size, resize=args.resize, data_dir=args.data_dir, seed=args.seed,
                                  limit=args.limit, eval_limit=args.eval_limit, verify=not args.no_verify)
    with noted(note, "vgg train", world.is_chief):
        model = vgg.VGG(config)
    if world.is_chief:
        print(f"vgg train: {args.backend}, {args.arch} at {args.resize}x{args.resize} in {args.precision}, "
              f"{vgg.parameter_count(model):,} parameters, {data.train.num_examples:,} training and "
              f"{data.test.num_examples:,} test examples -> {out}")
        print(f"vgg train: {world.describe()}")
    try:
        history = vgg.train(model, data, **{k: getattr(recipe, k) for k in training.Recipe.__dataclass_fields__},
                            checkpoint_dir=out / "checkpoints", resume=args.resume, overwrite=args.overwrite,
                            progress=not args.no_progress,
                            on_start=(lambda _: _record(out, args, world)) if world.is_chief else None)
    except training.TrainingDiverged:
        raise
    except Exception as exc:  # a peer's death reaches the others as their engine's error, with its traceback
        if world.processes == 1:
            raise
        raise distributed.DistributedError(
            f"rank {world.rank} stopped: {world.engine} failed ({formats.first_line(exc, 300)}); another worker "
            "probably died or lost its network: see its output, then --resume every node") from exc
    if world.is_chief:
        history.save(out)
        model_path = vgg.save(model, out / f"model{vgg.MODEL_SUFFIX}")
        print(f"vgg train: wrote {out / 'history.json'}, history.csv, history.png and {model_path.name}")
        try:  # the run's final figures as a record (docs/results.md); a checkout without git has no commit to name
            print(f"vgg train: wrote the record {train_record.write(out).name}")
        except records.RecordError as exc:
            print(f"vgg train: no record written: {exc}", file=sys.stderr)
    return 0
