"""What a ``vgg compare`` child measures: one backend's build, first step, training and inference
throughput, the step's forward/backward split, peak memory and batch-1 serving latency at one size
(``measure``), and the machine's float32 product ceiling."""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from common.core import backends, layouts, oracle, summary, tolerances
from common.core.config import ModelConfig
from common.core.precision import PrecisionWarning
from common.data.batches import to_float
from common.runtime import training
from common.runtime.contract import Backend
from common.runtime.machine import cores, peak_rss_mb
from common.serving import formats, onnx_files
from common.tools import loading
from common.tools.report_types import CeilingRun, FailedServer, Latency, Measured, StepSplit

#: The recipe of ``--train-epochs``: the one that reaches 0.91+ at 56x56 in every backend.
RECIPE = dict(lr=0.02, momentum=0.9, schedule="cosine", warmup_epochs=1)


def _matmuls(a: np.ndarray, names: list[str], device: str, precision: str):
    """(engine, a function computing ``a @ a`` to completion on ``device`` in ``precision``) for NumPy (float32
    on a CPU) and each backend that loads and runs that product."""
    if (device, precision) == ("cpu", "fp32"):
        yield f"numpy {np.__version__}", lambda: a @ a
    for name in names:
        try:
            vgg = loading.backend(name)
            vgg.set_threads(cores())
            product = vgg.matmul(a, device, precision)
        except Exception:  # missing, broken, or without this product: its own row reports why
            continue
        yield name, product


#: the fewest batch-1 requests behind the latency percentiles, and their default (p99 of 1,000 lies between
#: the tenth and eleventh slowest); VGG_LATENCY_REQUESTS lowers it where speed is not the point (the test suite)
MIN_REQUESTS = int(os.environ.get("VGG_LATENCY_REQUESTS", "1000"))
#: untimed batch-1 requests before the timed ones: thread pools, compilation, caches
WARMUP_REQUESTS = 20
#: what serves the requests: the live model's predict, its native export reloaded, its ONNX export in ONNX Runtime
SERVED = ("live", "native", "onnx")
#: the fewest forward/full-step pairs behind the step split
MIN_SPLIT_PAIRS = 5


#: side of the products that measure a CPU's ceiling (a GPU's are twice as wide: milliseconds, not
#: microseconds, each); VGG_CEILING_SIZE makes it smaller where speed is not the point (the test suite)
CEILING_SIZE = int(os.environ.get("VGG_CEILING_SIZE", "4096"))


def matmul_ceiling(names: list[str], size: int | None = None, repeats: int = 3, device: str = "cpu",
                   precision: str = "fp32") -> CeilingRun:
    """GFLOP/s of the best of ``repeats`` ``size``x``size`` products on ``device`` in ``precision``'s format,
    in NumPy (float32 on a CPU) and in the frameworks of ``names`` (their BLAS libraries differ by up to 2x on
    one CPU); the ceiling is the fastest of them."""
    size = size or (CEILING_SIZE if device == "cpu" else 2 * CEILING_SIZE)
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    samples: dict[str, list[float]] = {}
    for engine, product in _matmuls(a, names, device, precision):
        product()  # warm-up: thread pools, compilation
        samples[engine] = []
        for _ in range(repeats):
            began = time.perf_counter()
            product()
            samples[engine].append(2 * size ** 3 / (time.perf_counter() - began) / 1e9)
    if not samples:
        raise RuntimeError(f"no framework of {','.join(names)} computes a {precision} product on the {device} here")
    by_engine = {engine: max(values) for engine, values in samples.items()}
    return {"gflop_s": max(by_engine.values()), "by_engine": by_engine, "samples": samples, "size": size}


def _timed(call: Callable, *args) -> float:
    """Seconds ``call(*args)`` takes (each call here runs its work to completion)."""
    began = time.perf_counter()
    call(*args)
    return time.perf_counter() - began


def time_split(vgg: Backend, engine: Any, stream: Iterator[tuple[Any, Any]], lr: float,
               seconds: float) -> StepSplit:
    """Forward and backward-plus-update ms of one training step: forward-only and full steps alternate on
    the same batches (at least :data:`MIN_SPLIT_PAIRS` pairs, about ``seconds``), each part's median is
    taken, and backward + update is the full step's median less the forward's."""
    forward, step = vgg.step_split(engine)
    forward(*next(stream))  # warm-up: the forward alone is traced or compiled once
    forwards: list[float] = []
    steps: list[float] = []
    began = time.perf_counter()
    while len(steps) < MIN_SPLIT_PAIRS or time.perf_counter() - began < seconds:
        batch = next(stream)
        forwards.append(_timed(forward, *batch))
        steps.append(_timed(step, *batch, lr))
    f, s = statistics.median(forwards), statistics.median(steps)
    return {"forward_ms": 1000 * f, "backward_update_ms": 1000 * (s - f), "step_ms": 1000 * s,
            "split_pairs": len(steps)}


def latency(forward: Callable[[np.ndarray], object], image: np.ndarray, requests: int) -> Latency:
    """p50, p90 and p99 (ms) of ``requests`` batch-1 calls of ``forward`` (which returns NumPy logits, so
    each call waits for its answer), after :data:`WARMUP_REQUESTS` untimed ones."""
    for _ in range(WARMUP_REQUESTS):
        forward(image)
    times = [_timed(forward, image) for _ in range(requests)]
    p50, p90, p99 = (1000 * v for v in np.percentile(times, (50, 90, 99)))
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "requests": requests}


def _reopened(vgg: Backend, model: Any, folder: Path, fmt: str, threads: int | None,
              device: str) -> tuple[Callable, float]:
    """The model exported in ``fmt`` into ``folder`` and opened as a server opens it (native with
    ``load_exported``, ONNX in ONNX Runtime with ``threads``), and the seconds the export took."""
    began = time.perf_counter()
    path = vgg.export(model, folder / f"model{formats.export_suffix(vgg.NAME, fmt)}", fmt).path
    seconds = time.perf_counter() - began
    if fmt == "onnx":
        return onnx_files.runner(onnx_files.session(path, threads, device)), seconds
    return vgg.load_exported(path)[0], seconds


def serving_latency(vgg: Backend, model: Any, image: np.ndarray, requests: int, threads: int | None,
                    device: str) -> dict[str, Latency | FailedServer]:
    """Batch-1 latency of the live model and of its native and ONNX exports (:data:`SERVED`); an export
    that cannot be made or run here (a missing optional package, an exporter's failure) is its error."""
    served: dict[str, Latency | FailedServer] = {"live": latency(lambda x: vgg.predict(model, x, 1), image, requests)}
    with tempfile.TemporaryDirectory(prefix="vgg-latency-") as folder:
        for fmt in SERVED[1:]:
            try:
                forward, seconds = _reopened(vgg, model, Path(folder), fmt, threads, device)
                served[fmt] = {**latency(forward, image, requests), "export_s": seconds}
            except Exception as exc:  # a note in the row, not the end of it
                served[fmt] = {"error": formats.first_line(exc)}
    return served


def measure(backend: str, config: ModelConfig, batch_size: int, seconds: float, data_dir: str | None,
            verify: bool, train_epochs: int, steps: int | None = None, device: str = "cpu",
            requests: int = 0) -> Measured:
    """One child's work on the model ``config`` describes (its size and precision): build, first step,
    training throughput and its forward/backward split, inference throughput, the logits' distance from the
    float64 oracle, peak memory (and training, and ``requests`` batch-1 requests to each server of
    :data:`SERVED` where ``requests`` > 0).

    Launched as W workers, every worker takes its shard of each global batch and all take ``steps`` steps
    (a time limit would let them disagree on when to stop, and a collective would wait forever);
    throughput is then the global batch's, and inference and training are left to the single-process row.
    """
    began = time.perf_counter()
    vgg = loading.backend(backend)
    world = vgg.init_distributed(device=device)  # threads: cores for one process, cores / W for each of W workers
    size, blocks = config.image_size, config.arch
    import_s, env, device_name = time.perf_counter() - began, backends.environment(backend), vgg.device_name(device)
    data = vgg.load_fashion_mnist(batch_size, resize=size, data_dir=data_dir, verify=verify, drop_last=True)
    began = time.perf_counter()
    with warnings.catch_warnings():  # the parent printed the precision's note once
        warnings.simplefilter("ignore", PrecisionWarning)
        model = vgg.VGG(config)
    build_s = time.perf_counter() - began
    engine = vgg.Engine(
        model, training.Recipe(lr=0.01, momentum=0.9, batch_size=batch_size))
    engine.reseed(0)
    train = data.train.sharded(world.rank, world.processes)
    stream: Iterator[tuple[Any, Any]] = (b for k in itertools.count() for b in train.epoch(k))  # (images, labels)
    began = time.perf_counter()
    engine.step(*next(stream), 0.01)
    first_step_s = time.perf_counter() - began
    engine.step(*next(stream), 0.01)  # a second warm-up step: some frameworks finish compiling here
    communication_ms = vgg.communication_timer(engine)
    done, began = 0, time.perf_counter()
    while (done < steps) if steps else (done < 2 or time.perf_counter() - began < seconds):
        engine.step(*next(stream), 0.01)
        done += 1
    train_ex_s = done * batch_size / (time.perf_counter() - began)
    flops = summary.flop_count(blocks, image_size=size, training=True, batch_norm=config.batch_norm,
                               hidden=config.hidden)
    row: Measured = {"backend": backend, "size": size, "precision": config.precision, "workers": world.processes,
                     "threads": world.threads, "engine": world.engine, "import_s": import_s, "env": env,
                     "device": device_name, "kernels": vgg.kernels(device),
                     "build_s": build_s, "first_step_s": first_step_s, "train_ex_s": train_ex_s,
                     "train_gflop_s": train_ex_s * flops / 1e9, "comm_ms": communication_ms(),
                     "peak_rss_mb": peak_rss_mb()}  # one process: again after inference, below
    if world.distributed:
        return row
    row.update(time_split(vgg, engine, stream, 0.01, seconds / 4))
    images = layouts.with_channels(to_float(data.test.images[:batch_size], size), vgg.LAYOUT)
    vgg.predict(model, images, batch_size)  # warm-up / compile
    calls, began = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - began < seconds / 2:
        vgg.predict(model, images, batch_size)
        calls += 1
    row["infer_ex_s"] = calls * len(images) / (time.perf_counter() - began)
    nchw = layouts.with_channels(to_float(data.test.images[:4], size), "NCHW")
    row["parity_error"] = tolerances.relative(  # the trained weights' logits against float64's
        vgg.predict(model, layouts.images_from_nchw(nchw, vgg.LAYOUT)),
        oracle.forward(vgg.export_weights(model), blocks, nchw, config.batch_norm))
    row["peak_rss_mb"] = peak_rss_mb()  # of the measured steps only: every round alike, before training or exports
    if train_epochs:
        model = vgg.VGG(config)
        history = vgg.train(model, data, epochs=train_epochs, batch_size=batch_size, progress=False,
                            log=lambda line: print(f"{backend} @{size}: {line}", file=sys.stderr, flush=True),
                            **{**RECIPE, "warmup_epochs": RECIPE["warmup_epochs"] if train_epochs > 1 else 0})
        row["test_acc"] = history["test_acc"][-1]
        row["history"] = history.rows
    if requests:
        row["latency"] = serving_latency(vgg, model, images[:1], requests, world.threads, device)
    return row
