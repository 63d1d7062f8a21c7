"""``vgg parity --workers W``: does each framework's data-parallel engine compute what one process does?

For every backend: the same canonical weights, 3 SGD steps with momentum 0.9 and a changing lr, dropout
off, once in one process, once in W worker processes (the framework's engine, launched as ``vgg train``
launches it) and once over W devices in one process where the framework has that; then the maximum
relative parameter difference against the single process, and across frameworks for the W-process runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common.core import arch, backends, canonical, layouts, tolerances
from common.runtime import distributed, training
from common.tools import launch, loading, parity

TOLERANCE = 1e-5  # one process vs W workers or D devices of one framework (summation order only)
LRS = (0.05, 0.02, 0.035)  # a changing lr: an engine that keeps a stale lr (MXNet's servers) would show
MOMENTUM = 0.9  # torch.optim.SGD's meaning in all four (MXNet rescales its lr-scaled state: issue 24)


def steps(backend: str, blocks, image_size: int, batch: int, seed: int, devices: int, out: Path,
          hidden: int = arch.HIDDEN) -> None:
    """One worker's part: init the engine, import the canonical weights, take the SGD steps on this
    worker's shard of each batch; the chief writes the canonical weights afterwards."""
    vgg = loading.backend(backend)
    world = vgg.init_distributed(devices=devices)
    model = vgg.VGG(blocks, image_size=image_size, dropout=0.0, hidden=hidden)
    vgg.import_weights(model, canonical.random_weights(blocks, image_size=image_size, seed=seed, hidden=hidden))
    engine = vgg.Engine(model, training.Recipe(lr=LRS[0], momentum=MOMENTUM, batch_size=batch))
    engine.reseed(0)
    distributed.check_split(world.replicas, batch, batch)
    part = distributed.shard_of(batch, world.rank, world.processes)
    for i, lr in enumerate(LRS):
        images, labels = tolerances.fixed_batch(blocks, image_size, batch, seed=seed + 1 + i)
        engine.step(*vgg.to_tensor(layouts.images_from_nchw(images[part], vgg.LAYOUT), labels[part]), lr)
    if world.is_chief:
        canonical.save_file(vgg.export_weights(model), out)


def _command(backend: str, arch_name: str, image_size: int, batch: int, seed: int, devices: int,
             out: Path, hidden: int) -> list[str]:
    return ["--backend", backend, "--arch", arch_name, "--size", str(image_size), "--batch", str(batch),
            "--seed", str(seed), "--devices", str(devices), "--out", str(out), "--hidden", str(hidden)]


def _run_one(backend: str, args: list[str], workers: int, threads: int) -> None:
    if workers == 1:
        proc = subprocess.run([sys.executable, "-m", __name__, *args], env=launch.base_env(threads),
                              capture_output=True, text=True, timeout=900)
        if proc.returncode:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                               f"exit status {proc.returncode}")
        return
    code = launch.launch(backend, __name__, args, workers, threads=threads, prog="vgg parity")
    if code:
        raise RuntimeError(f"{workers} workers failed (status {code})")


def run(names: list[str], arch_name: str, image_size: int, workers: int, batch: int = 8, seed: int = 0,
        log=print, hidden: int = arch.HIDDEN) -> dict:
    """Every backend in one process, in ``workers`` processes and (where it exists) over ``workers``
    devices of one process; returns ``{"engines": {backend: {config: diff}}, "across": {pair: diff},
    "trajectories": {backend: canonical weights after the W-process run}}``."""
    blocks, batch_norm = arch.parse(arch_name)
    if batch_norm:  # each engine's own meaning: per worker in DDP, MirroredStrategy and kvstore; global in jax.sharding
        raise arch.ArchError(f"--arch {arch_name}: parity across worker counts is for plain archs; batch norm's "
                             "statistics are per worker in some engines and global in others, so they differ by design")
    distributed.check_split(workers, batch, batch)
    results: dict[str, dict[str, dict]] = {}
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
                    _run_one(name, _command(name, arch_name, image_size, batch, seed, devices, out, hidden), procs,
                             distributed.threads_per_worker(procs, devices))
                    results[name][label] = canonical.load(out)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    results[name][label] = str(exc)
    engines = {name: {label: (tolerances.relative_tree(runs["1 process"], value)
                              if isinstance(value, dict) and isinstance(runs["1 process"], dict) else value)
                      for label, value in runs.items() if label != "1 process"}
               for name, runs in results.items()}
    key = f"{workers} processes"
    done = {n: r[key] for n, r in results.items() if isinstance(r.get(key), dict)}
    across = {(a, b): tolerances.relative_tree(done[a], done[b]) for a in done for b in done if a != b}
    return {"engines": engines, "across": across, "workers": workers, "trajectories": done}


def format_report(report: dict) -> str:
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


def passed(report: dict) -> bool:
    engines = all(isinstance(v, float) and v <= TOLERANCE for runs in report["engines"].values()
                  for v in runs.values())
    return engines and all(v <= tolerances.TOLERANCES["trajectory"] for v in report["across"].values())


def _main() -> None:
    p = argparse.ArgumentParser(description="one worker of vgg parity --workers (internal)")
    p.add_argument("--backend", required=True)
    p.add_argument("--arch", default="small")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hidden", type=int, default=arch.HIDDEN)
    a = p.parse_args()
    steps(a.backend, arch.by_name(a.arch), a.size, a.batch, a.seed, a.devices, a.out, a.hidden)


if __name__ == "__main__":
    _main()
