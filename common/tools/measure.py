"""What a ``vgg compare`` child measures: one backend's build, first step, training and inference
throughput and peak memory at one size (``measure``), and the machine's float32 product ceiling."""

from __future__ import annotations

import itertools
import os
import sys
import time
import warnings

import numpy as np

from common.core import backends, layouts, oracle, summary, tolerances
from common.core.config import ModelConfig
from common.core.precision import PrecisionWarning
from common.data.batches import to_float
from common.runtime import training
from common.runtime.machine import cores, peak_rss_mb
from common.tools import loading

#: The recipe of ``--train-epochs``: the one that reaches 0.91+ at 56x56 in every backend.
RECIPE = dict(lr=0.02, momentum=0.9, schedule="cosine", warmup_epochs=1)


def _matmuls(a: np.ndarray, names: list[str]):
    """(engine, a function computing ``a @ a`` to completion) for NumPy and each backend that loads."""
    yield f"numpy {np.__version__}", lambda: a @ a
    for name in names:
        try:
            vgg = loading.backend(name)
            vgg.set_threads(cores())
        except Exception:  # missing or broken: its own row reports why
            continue
        yield name, vgg.matmul(a)


#: side of the float32 products that measure the ceiling; VGG_CEILING_SIZE makes it smaller where speed is
#: not the point (the test suite)
CEILING_SIZE = int(os.environ.get("VGG_CEILING_SIZE", "4096"))


def matmul_ceiling(names: list[str], size: int = CEILING_SIZE, repeats: int = 3) -> dict:
    """GFLOP/s of the best of ``repeats`` float32 ``size``x``size`` products in NumPy and in the frameworks
    of ``names`` (their BLAS libraries differ by up to 2x on one CPU); the ceiling is the fastest of them."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    samples = {}
    for engine, product in _matmuls(a, names):
        product()  # warm-up: thread pools, compilation
        samples[engine] = []
        for _ in range(repeats):
            began = time.perf_counter()
            product()
            samples[engine].append(2 * size ** 3 / (time.perf_counter() - began) / 1e9)
    by_engine = {engine: max(values) for engine, values in samples.items()}
    return {"gflop_s": max(by_engine.values()), "by_engine": by_engine, "samples": samples, "size": size}


def measure(backend: str, config: ModelConfig, batch_size: int, seconds: float, data_dir: str | None,
            verify: bool, train_epochs: int, steps: int | None = None, device: str = "cpu") -> dict:
    """One child's work on the model ``config`` describes (its size and precision): build, first step,
    training and inference throughput, the logits' distance from the float64 oracle, peak memory (and
    training).

    Launched as W workers, every worker takes its shard of each global batch and all take ``steps`` steps
    (a time limit would let them disagree on when to stop, and a collective would wait forever);
    throughput is then the global batch's, and inference and training are left to the single-process row.
    """
    began = time.perf_counter()
    vgg = loading.backend(backend)
    world = vgg.init_distributed(device=device)  # threads: cores for one process, cores / W for each of W workers
    size, blocks = config.image_size, config.arch
    row = {"backend": backend, "size": size, "precision": config.precision, "workers": world.processes,
           "threads": world.threads, "engine": world.engine, "import_s": time.perf_counter() - began,
           "env": backends.environment(backend), "device": vgg.device_name(device)}
    data = vgg.load_fashion_mnist(batch_size, resize=size, data_dir=data_dir, verify=verify, drop_last=True)
    began = time.perf_counter()
    with warnings.catch_warnings():  # the parent printed the precision's note once
        warnings.simplefilter("ignore", PrecisionWarning)
        model = vgg.VGG(config)
    row["build_s"] = time.perf_counter() - began
    engine = vgg.Engine(
        model, training.Recipe(lr=0.01, momentum=0.9, batch_size=batch_size))
    engine.reseed(0)
    train = data.train.sharded(world.rank, world.processes)
    stream = (b for k in itertools.count() for b in train.epoch(k))
    began = time.perf_counter()
    engine.step(*next(stream), 0.01)
    row["first_step_s"] = time.perf_counter() - began
    engine.step(*next(stream), 0.01)  # a second warm-up step: some frameworks finish compiling here
    communication_ms = vgg.communication_timer(engine)
    done, began = 0, time.perf_counter()
    while (done < steps) if steps else (done < 2 or time.perf_counter() - began < seconds):
        engine.step(*next(stream), 0.01)
        done += 1
    row["train_ex_s"] = done * batch_size / (time.perf_counter() - began)
    row["train_gflop_s"] = row["train_ex_s"] * summary.flop_count(blocks, image_size=size, training=True,
                                                                  batch_norm=config.batch_norm,
                                                                  hidden=config.hidden) / 1e9
    row["comm_ms"] = communication_ms()
    if world.distributed:
        row["peak_rss_mb"] = peak_rss_mb()
        return row
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
    if train_epochs:
        model = vgg.VGG(config)
        history = vgg.train(model, data, epochs=train_epochs, batch_size=batch_size, progress=False,
                            log=lambda line: print(f"{backend} @{size}: {line}", file=sys.stderr, flush=True),
                            **{**RECIPE, "warmup_epochs": RECIPE["warmup_epochs"] if train_epochs > 1 else 0})
        row["test_acc"] = history["test_acc"][-1]
        row["history"] = history.rows
    row["peak_rss_mb"] = peak_rss_mb()
    return row
