"""The book's own training step (D2L, "Networks Using Blocks (VGG)") next to this project's, per framework.

Each framework's reference is the book's code as the book runs it: eager PyTorch with torch.optim.SGD; eager
TensorFlow with GradientTape (no tf.function); Flax linen with only the loss jitted, value_and_grad around it
and an un-jitted optax update through TrainState; MXNet Gluon not hybridized. Same small VGG, the book's
init, batch 128, plain SGD at lr 0.01 and random data. The project's row is its Engine step with the same
optimizer (plain SGD; `--momentum 0.9` measures it as `vgg compare` does) on the same random data. Every
(code, framework, size) runs in its own process with the same thread settings as `vgg compare`
(OMP_NUM_THREADS = cores, so the book's MXNet uses both cores); rounds interleave book and project, and the
table gives the median and range per cell.

    python benchmarks/book_reference.py                       # torch,tf,jax,mxnet at 224 and 56, 2 rounds
    python benchmarks/book_reference.py --backends tf --sizes 56 --rounds 3 --seconds 10
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/book_reference.py   # a cap is passed on to every child

Every run writes its record (``vgg results show``) into ``--out``, or into ./reports without it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.core import arch, atomic, backends  # noqa: E402
from common.runtime.machine import cores, cpu, peak_rss_mb  # noqa: E402
from common.tools import loading, records  # noqa: E402
from common.tools.children import child_env  # noqa: E402

ARCH = arch.small()  # ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128)), the book's training net
LR = 0.01
#: environment variables that cap an instruction set; passed on and reported
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "XLA_FLAGS",
            "TF_ENABLE_ONEDNN_OPTS")


# --- the book's code, one function per framework: build, then return a step() that trains one batch -----

def book_torch(size: int, batch: int):
    import torch
    from torch import nn

    def vgg_block(num_convs, out_channels):
        layers = []
        for _ in range(num_convs):
            layers.append(nn.LazyConv2d(out_channels, kernel_size=3, padding=1))
            layers.append(nn.ReLU())
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        return nn.Sequential(*layers)

    net = nn.Sequential(*[vgg_block(n, c) for n, c in ARCH], nn.Flatten(),
                        nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(0.5),
                        nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(0.5), nn.LazyLinear(10))
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.random((batch, 1, size, size), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, batch))
    net(X)  # materialise the lazy layers, then d2l.init_cnn

    def init_cnn(module):
        if type(module) in (nn.Linear, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)

    net.apply(init_cnn)
    optim = torch.optim.SGD(net.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        loss = loss_fn(net(X), y)
        optim.zero_grad()
        loss.backward()
        optim.step()
        return float(loss)

    return step


def book_tf(size: int, batch: int):
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    def vgg_block(num_convs, num_channels):
        blk = tf.keras.models.Sequential()
        for _ in range(num_convs):
            blk.add(tf.keras.layers.Conv2D(num_channels, kernel_size=3, padding="same", activation="relu"))
        blk.add(tf.keras.layers.MaxPool2D(pool_size=2, strides=2))
        return blk

    net = tf.keras.models.Sequential()
    for n, c in ARCH:
        net.add(vgg_block(n, c))
    net.add(tf.keras.models.Sequential([
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(4096, activation="relu"), tf.keras.layers.Dropout(0.5),
        tf.keras.layers.Dense(4096, activation="relu"), tf.keras.layers.Dropout(0.5),
        tf.keras.layers.Dense(10)]))
    rng = np.random.default_rng(0)
    X = tf.constant(rng.random((batch, size, size, 1), dtype=np.float32))
    y = tf.constant(rng.integers(0, 10, batch))
    optim = tf.keras.optimizers.SGD(LR)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, net(X, training=True))
        grads = tape.gradient(loss, net.trainable_variables)
        optim.apply_gradients(zip(grads, net.trainable_variables))
        return float(loss)

    return step


def book_jax(size: int, batch: int):
    from functools import partial

    import jax
    import jax.numpy as jnp
    import optax
    from flax import linen as nn
    from flax.training import train_state

    def vgg_block(num_convs, out_channels):
        layers = []
        for _ in range(num_convs):
            layers.append(nn.Conv(out_channels, kernel_size=(3, 3), padding=(1, 1)))
            layers.append(nn.relu)
        layers.append(lambda x: nn.max_pool(x, window_shape=(2, 2), strides=(2, 2)))
        return nn.Sequential(layers)

    class VGG(nn.Module):
        arch: tuple
        num_classes: int = 10
        training: bool = True

        def setup(self):
            self.net = nn.Sequential([
                *[vgg_block(n, c) for n, c in self.arch],
                lambda x: x.reshape((x.shape[0], -1)),
                nn.Dense(4096), nn.relu, nn.Dropout(0.5, deterministic=not self.training),
                nn.Dense(4096), nn.relu, nn.Dropout(0.5, deterministic=not self.training),
                nn.Dense(self.num_classes)])

        def __call__(self, X):
            return self.net(X)

    model = VGG(ARCH)
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.random((batch, size, size, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, batch))
    key, dropout_key = jax.random.split(jax.random.PRNGKey(0))
    params = model.init({"params": key, "dropout": dropout_key}, X)["params"]

    class TrainState(train_state.TrainState):
        dropout_rng: jax.Array

    state = TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(LR), dropout_rng=dropout_key)

    @partial(jax.jit, static_argnums=(4,))
    def loss(params, X, Y, state, averaged=True):  # d2l.Classifier.loss: the only jitted part
        Y_hat = state.apply_fn({"params": params}, X, mutable=False, rngs={"dropout": state.dropout_rng})
        fn = optax.softmax_cross_entropy_with_integer_labels
        return (fn(Y_hat, Y).mean(), {}) if averaged else (fn(Y_hat, Y), {})

    def step():
        nonlocal state
        (value, _), grads = jax.value_and_grad(loss, has_aux=True)(state.params, X, y, state)
        state = state.apply_gradients(grads=grads)
        state = state.replace(dropout_rng=jax.random.split(state.dropout_rng)[0])
        return float(value)

    return step


def book_mxnet(size: int, batch: int):
    # vgg_mxnet.framework before mxnet: the numpy.bool alias MXNet 1.9.1 needs, then npx.set_np() as the book
    import vgg_mxnet.framework  # noqa: F401, I001  (imported for those effects, so first)
    from mxnet import autograd, gluon, init, np as mnp
    from mxnet.gluon import nn

    def vgg_block(num_convs, num_channels):
        blk = nn.Sequential()
        for _ in range(num_convs):
            blk.add(nn.Conv2D(num_channels, kernel_size=3, padding=1, activation="relu"))
        blk.add(nn.MaxPool2D(pool_size=2, strides=2))
        return blk

    net = nn.Sequential()
    for n, c in ARCH:
        net.add(vgg_block(n, c))
    net.add(nn.Dense(4096, activation="relu"), nn.Dropout(0.5),
            nn.Dense(4096, activation="relu"), nn.Dropout(0.5), nn.Dense(10))
    net.initialize(init.Xavier())
    rng = np.random.default_rng(0)
    X = mnp.array(rng.random((batch, 1, size, size), dtype=np.float32))
    y = mnp.array(rng.integers(0, 10, batch))
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": LR})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def step():
        with autograd.record():
            loss = loss_fn(net(X), y).mean()
        loss.backward()
        trainer.step(1)
        return float(loss)

    return step


BOOK = {"torch": book_torch, "tf": book_tf, "jax": book_jax, "mxnet": book_mxnet}


def project(backend: str, size: int, batch: int, momentum: float = 0.0):
    """This project's training step (its Engine, SGD at the book's lr) on random data."""
    from common.runtime import training

    vgg = loading.backend(backend)
    vgg.init_distributed()  # thread settings, as in `vgg compare`
    model = vgg.VGG(ARCH, image_size=size)
    engine = vgg.Engine(
        model, training.Recipe(lr=LR, momentum=momentum, batch_size=batch))
    engine.reseed(0)
    shape = (batch, 1, size, size) if vgg.LAYOUT == "NCHW" else (batch, size, size, 1)
    rng = np.random.default_rng(0)
    images, labels = vgg.data.to_tensor(rng.random(shape, dtype=np.float32),
                                        rng.integers(0, 10, batch).astype(np.int64))
    return lambda: engine.step(images, labels, LR)


def measure(code: str, backend: str, size: int, batch: int, seconds: float, momentum: float = 0.0) -> dict:
    """One child's work: build, two warm-up steps, then as many steps as fit in ``seconds``; examples/s over
    them all and from the median step (steadier on a shared machine)."""
    began = time.perf_counter()
    step = BOOK[backend](size, batch) if code == "book" else project(backend, size, batch, momentum)
    step()
    first = time.perf_counter() - began
    step()
    times, began = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - began < seconds:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"code": code, "backend": backend, "size": size, "ex_s": len(times) * batch / sum(times),
            "ex_s_median": batch / statistics.median(times), "steps": len(times),
            "build_and_first_step_s": first, "peak_rss_mb": peak_rss_mb(), "env": backends.environment(backend)}


def run_child(script: Path, child: list[str], a: argparse.Namespace, env: dict[str, str], cwd: Path,
              python: str = sys.executable) -> dict | str:
    """``script --child CODE BACKEND SIZE`` with ``a``'s measuring options in its own process (under
    ``python``): its row, or the last line of its error."""
    proc = subprocess.run([python, str(script), "--child", *child, "--seconds", str(a.seconds),
                           "--batch-size", str(a.batch_size), "--momentum", str(a.momentum)],
                          env=env, cwd=cwd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode < 0:  # killed: the last line of stderr is whatever it printed before
        return f"killed by {signal.Signals(-proc.returncode).name}"
    if proc.returncode or not lines:
        return (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return json.loads(lines[-1])


def check_size(p: argparse.ArgumentParser, option: str, size: int) -> None:
    """The image-size check of this folder's scripts: one line and exit 2 unless the small VGG's poolings
    leave ``size`` at least one pixel."""
    if size < arch.min_resolution(ARCH):
        p.error(f"{option} {size}: give {arch.min_resolution(ARCH)} or more (the small VGG halves the image "
                f"{len(ARCH)} times)")


def check_measuring(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """The measuring options this script and ab.py share: one line and exit 2 when one is out of range."""
    if a.rounds < 1 or a.seconds <= 0 or a.batch_size < 1:
        p.error("--rounds and --batch-size must be at least 1, --seconds above 0")


def table(rows: list[dict], names: list[str], sizes: list[int]) -> str:
    def cell(code, name, size, key):
        return [r[key] for r in rows if (r["code"], r["backend"], r["size"]) == (code, name, size) and key in r]

    def spread(values, fmt):
        return "failed" if not values else (f"{statistics.median(values):{fmt}} "
                                             f"({min(values):{fmt}}-{max(values):{fmt}})")

    lines = ["| framework | size | book ex/s | project ex/s | ratio | book / project peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for name in names:
        for size in sizes:
            book, mine = cell("book", name, size, "ex_s"), cell("project", name, size, "ex_s")
            ratios = [m / b for b, m in zip(book, mine)]  # round by round: the two ran minutes apart
            rss = (f"{statistics.median(cell('book', name, size, 'peak_rss_mb')):.0f} / "
                   f"{statistics.median(cell('project', name, size, 'peak_rss_mb')):.0f}") if book and mine else "—"
            lines.append(f"| {name} | {size} | {spread(book, '.1f')} | {spread(mine, '.1f')} | "
                         f"{spread(ratios, '.2f')} | {rss} |")
    return "\n".join(lines)


def record(rows: list[dict], settings: dict, **provenance) -> dict:
    """The book-reference record of ``rows`` (this script's JSON): examples/s, peak RSS and build-and-first-step
    time per code, backend and size with every round as a sample, and the project/book ratio taken round by
    round; ``provenance`` goes to ``records.make`` (a converted report passes the one it stated)."""
    results = []
    for backend, size in dict.fromkeys((r["backend"], r["size"]) for r in rows):
        cell = {code: {r["round"]: r for r in rows if (r["code"], r["backend"], r["size"]) == (code, backend, size)}
                for code in ("book", "project")}
        for code, by_round in cell.items():
            for metric, unit, key in (("train_ex_s", "ex/s", "ex_s"), ("peak_rss_mb", "MB", "peak_rss_mb"),
                                      ("build_and_first_step_s", "s", "build_and_first_step_s")):
                values = [r[key] for r in by_round.values()]
                if values:
                    results.append(records.result(metric, unit, statistics.median(values), samples=values,
                                                  code=code, backend=backend, size=size))
        ratios = [cell["project"][n]["ex_s"] / cell["book"][n]["ex_s"] for n in cell["book"] if n in cell["project"]]
        if ratios:  # round by round: the two ran minutes apart
            results.append(records.result("ratio", "x", statistics.median(ratios), samples=ratios,
                                          backend=backend, size=size))
    return records.make("book-reference", results, details=settings, **provenance)


def _refuse_overwrite(p: argparse.ArgumentParser, out: Path | None) -> None:
    if out and any((out / name).exists() for name in ("book_reference.md", "book_reference.json")):
        p.error(f"--out {out}: it holds another run's report; results are never overwritten, choose a new folder")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="torch,tf,jax,mxnet", help="comma-separated (default: all four)")
    p.add_argument("--sizes", default="224,56", help="comma-separated image sizes (default: 224,56)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the ratio is taken per round")
    p.add_argument("--seconds", type=float, default=20, help="timed steps per cell, after two warm-up steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--momentum", type=float, default=0.0,
                   help="the project's SGD momentum (default 0: the book's plain SGD)")
    p.add_argument("--out", default=None,
                   help="a folder for the report (Markdown), rows (JSON) and the run's record (default: the "
                        "record alone, into ./reports)")
    p.add_argument("--child", nargs=3, metavar=("CODE", "BACKEND", "SIZE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(measure(a.child[0], a.child[1], int(a.child[2]), a.batch_size, a.seconds, a.momentum)))
        return
    names = [n for n in a.backends.split(",") if n]
    try:
        sizes = [int(s) for s in a.sizes.split(",") if s]
    except ValueError:
        p.error(f"--sizes: {a.sizes!r} is not a comma-separated list of image sizes, e.g. 224,56")
    if not sizes:
        p.error(f"--sizes: {a.sizes!r} names no image size, e.g. 224,56")
    for size in sizes:
        check_size(p, "--sizes", size)
    check_measuring(p, a)
    for name in names:
        if name not in BOOK:
            p.error(f"--backends: unknown backend {name!r}; choose from {','.join(BOOK)}")
    _refuse_overwrite(p, Path(a.out) if a.out else None)
    caps = {k: os.environ[k] for k in ISA_CAPS if k in os.environ}
    header = (f"{datetime.now(timezone.utc):%Y-%m-%d}; {cores()} cores, {cpu()}; caps: "
              f"{', '.join(f'{k}={v}' for k, v in caps.items()) or 'none'}; batch {a.batch_size}, "
              f"{a.seconds:g} s per cell, {a.rounds} rounds; the project's SGD momentum {a.momentum:g}")
    print(header, file=sys.stderr)
    rows = []
    for r in range(a.rounds):
        for size in sizes:
            for name in names:
                order = ("book", "project") if r % 2 == 0 else ("project", "book")
                for code in order:
                    row = run_child(Path(__file__), [code, name, str(size)], a, child_env(), ROOT)
                    if isinstance(row, str):
                        print(f"round {r + 1}: {code} {name} @{size} failed: {row}", file=sys.stderr)
                        continue
                    row["round"] = r + 1
                    rows.append(row)
                    print(f"round {r + 1}: {code:7} {name:5} @{size:<3} {row['ex_s']:8.1f} ex/s  "
                          f"peak {row['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    report = f"{header}\n\n{table(rows, names, sizes)}\n"
    print(report)
    out = Path(a.out) if a.out else Path("reports")
    if a.out:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / "book_reference.md", f"`{' '.join(sys.argv)}`\n\n{report}")
        atomic.write_text(out / "book_reference.json", json.dumps(rows, indent=1))
    if rows:
        settings = {"batch_size": a.batch_size, "seconds": a.seconds, "rounds": a.rounds, "momentum": a.momentum,
                    "caps": caps}
        done = records.write(record(rows, settings, report=str(out / "book_reference.md") if a.out else None), out)
        print(f"book_reference: wrote the record {done}", file=sys.stderr)


if __name__ == "__main__":
    main()
