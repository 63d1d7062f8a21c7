"""``vgg parity --workers W``: does each framework's data-parallel engine compute what one process does?

For every backend: the same canonical weights, 3 SGD steps with momentum 0.9 and a changing lr, dropout
off, once in one process, once in W worker processes (the framework's engine, launched as ``vgg train``
launches it) and once over W devices in one process where the framework has that; then the maximum
relative parameter difference against the single process, and across frameworks for the W-process runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.core import arch, backends, canonical, layouts, tolerances
from common.core.config import ModelConfig
from common.runtime import distributed, training
from common.tools import children, launch, loading, parity
from common.tools.report_types import DistributedParityReport

TOLERANCE = 1e-5  # one process vs W workers or D devices of one framework (summation order only)
LRS = (0.05, 0.02, 0.035)  # a changing lr: an engine that keeps a stale lr (MXNet's servers) would show
MOMENTUM = 0.9  # torch.optim.SGD's meaning in all four (MXNet rescales its lr-scaled state: issue 24)


def steps(backend: str, config: ModelConfig, batch: int, devices: int, out: Path) -> None:
    """One worker's part: init the engine, import the canonical weights of ``config`` (its seed seeds them and
    the batches; dropout off), take the SGD steps on this worker's shard of each batch; the chief writes the
    canonical weights afterwards."""
    config = dataclasses.replace(config, dropout=0.0)
    vgg = loading.backend(backend)
    world = vgg.init_distributed(devices=devices)
    model = vgg.VGG(config)
    vgg.import_weights(model, canonical.random_weights(config))
    engine = vgg.Engine(model, training.Recipe(lr=LRS[0], momentum=MOMENTUM, batch_size=batch))
    engine.reseed(0)
    distributed.check_split(world.replicas, batch, batch)
    part = distributed.shard_of(batch, world.rank, world.processes)
    for i, lr in enumerate(LRS):
        images, labels = tolerances.fixed_batch(config.arch, config.image_size, batch, config.in_channels,
                                                config.num_classes, seed=config.seed + 1 + i)
        engine.step(*vgg.to_tensor(layouts.images_from_nchw(images[part], vgg.LAYOUT), labels[part]), lr)
    if world.is_chief:
        canonical.save_file(vgg.export_weights(model), out)


def _command(backend: str, config: ModelConfig, batch: int, devices: int, out: Path) -> list[str]:
    return ["--backend", backend, "--config", json.dumps(config.to_dict()), "--batch", str(batch),
            "--devices", str(devices), "--out", str(out)]


def _run_one(backend: str, args: list[str], workers: int, threads: int) -> None:
    if workers == 1:
        error = children.run(__name__, args, env=launch.base_env(threads), timeout=900)
        if error:
            raise RuntimeError(error)
        return
    code = launch.launch(backend, __name__, args, workers, threads=threads, prog="vgg parity")
    if code:
        raise RuntimeError(f"{workers} workers failed (status {code})")


def run(names: list[str], config: ModelConfig, workers: int, batch: int = 8,
        log: Callable[[str], None] = print) -> DistributedParityReport:
    """Every backend in one process, in ``workers`` processes and (where it exists) over ``workers``
    devices of one process, on the model ``config`` describes (its seed seeds the weights and batches);
    returns ``{"engines": {backend: {label: diff}}, "across": {pair: diff}, "trajectories": {backend:
    canonical weights after the W-process run}}``."""
    # batch norm has each engine's own meaning: per worker in DDP, MirroredStrategy and kvstore; global in jax.sharding
    if config.batch_norm:
        raise arch.ArchError(f"--arch {arch.name_of(config.arch, True)}: parity across worker counts is for plain "
                             "archs; batch norm's statistics are per worker in some engines and global in others, so "
                             "they differ by design")
    distributed.check_split(workers, batch, batch)
    results: dict[str, dict[str, dict[str, np.ndarray] | str]] = {}  # backend -> label -> weights, or the error
    with tempfile.TemporaryDirectory(prefix="vgg-parity-") as tmp:
        for name in names:
            configs = [("1 process", 1, 1), (f"{workers} processes", workers, 1)]
            if backends.BACKENDS[name].in_process_devices:
                configs.append((f"{workers} devices", 1, workers))
            results[name] = {}
            for label, procs, devices in configs:
                log(f"parity: {name}, {label} ...")
                out = Path(tmp) / f"{name}-{procs}-{devices}.safetensors"
                try:
                    _run_one(name, _command(name, config, batch, devices, out), procs,
                             distributed.threads_per_worker(procs, devices))
                    results[name][label] = canonical.load(out)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    results[name][label] = str(exc)
    engines = {name: {label: _difference(runs["1 process"], value) for label, value in runs.items()
                      if label != "1 process"} for name, runs in results.items()}
    key = f"{workers} processes"
    done = {n: found for n, r in results.items() if isinstance(found := r.get(key), dict)}
    across = {(a, b): tolerances.relative_tree(done[a], done[b]) for a in done for b in done if a != b}
    return {"engines": engines, "across": across, "workers": workers, "trajectories": done}


def _difference(single: dict[str, np.ndarray] | str, other: dict[str, np.ndarray] | str) -> float | str:
    """A worker configuration's difference from the one-process run, or why there is none."""
    if isinstance(other, str):
        return other
    if isinstance(single, str):
        return f"no one-process run to compare with ({single})"
    return tolerances.relative_tree(single, other)


def format_report(report: DistributedParityReport) -> str:
    labels = list(dict.fromkeys(label for runs in report["engines"].values() for label in runs))
    lines = [f"one process vs the framework's engine (max relative parameter difference after {len(LRS)} "
             f"SGD steps, momentum {MOMENTUM}, lr {', '.join(map(str, LRS))}; tolerance {TOLERANCE:g})", "",
             "| backend | engine | " + " | ".join(labels) + " |", "|---" * (len(labels) + 2) + "|"]
    for name, runs in report["engines"].items():
        cells = []
        for label in labels:
            value = runs.get(label)
            cells.append("n/a (one process per device)" if value is None else
                         f"FAILED: {value}" if isinstance(value, str) else
                         f"{value:.1e} {'pass' if value <= TOLERANCE else 'FAIL'}")
        lines.append(f"| {name} | {backends.BACKENDS[name].engine} | " + " | ".join(cells) + " |")
    if report["across"]:
        lines += ["", parity.format_matrix(report["across"], "trajectory").replace(
            "trajectory", f"{report['workers']}-process trajectories across frameworks", 1)]
    return "\n".join(lines)


def passed(report: DistributedParityReport) -> bool:
    engines = all(isinstance(v, float) and v <= TOLERANCE for runs in report["engines"].values()
                  for v in runs.values())
    return engines and all(v <= tolerances.TOLERANCES["trajectory"] for v in report["across"].values())


def _main() -> None:
    p = argparse.ArgumentParser(description="one worker of vgg parity --workers (internal)")
    p.add_argument("--backend", required=True)
    p.add_argument("--config", type=json.loads, required=True, help="the model's ModelConfig, as JSON")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    steps(a.backend, ModelConfig.from_dict(a.config, "--config"), a.batch, a.devices, a.out)


if __name__ == "__main__":
    _main()
