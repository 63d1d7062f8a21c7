"""``vgg compare``: the four backends measured on the same work, side by side, one subprocess each.

Each (backend, resolution) runs in its own child process (its memory is its own, no thread pool starves
another) with the same thread settings, under the interpreter given for that backend (so JAX can come from
a NumPy 2 environment and MXNet from a NumPy 1 one); the parent prints progress, collects one JSON line per
child and rewrites the report after every row, so Ctrl-C keeps what was measured.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common import arch, atomic, backends, distributed, launch, summary, training
from common.batches import to_float, with_channels

ROOT = Path(__file__).resolve().parents[1]
#: The recipe of ``--train-epochs``: the one that reaches 0.91+ at 56x56 in every backend.
RECIPE = dict(lr=0.02, momentum=0.9, schedule="cosine", warmup_epochs=1)
THREADS = {  # what each framework is told, with the same core count everywhere
    "torch": "torch.set_num_threads(cores), OMP_NUM_THREADS=cores",
    "tf": "intra-op threads = cores, inter-op threads = 1",
    "jax": "XLA CPU defaults (all cores), OMP_NUM_THREADS=cores",
    "mxnet": "OMP_NUM_THREADS=cores (read at import)",
}


def cores() -> int:
    return len(os.sched_getaffinity(0))


def child_env() -> dict[str, str]:
    """The environment of every child: the same thread count for every framework and BLAS."""
    n = str(cores())
    return {**os.environ, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def _configure_threads(backend: str) -> None:
    n = cores()
    if backend == "torch":
        import torch

        torch.set_num_threads(n)
    elif backend == "tf":
        from vgg_tf.framework import tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def _matmuls(a: np.ndarray, names: list[str]):
    """(engine, a function computing ``a @ a`` to completion) for NumPy and each backend that loads."""
    yield f"numpy {np.__version__}", lambda: a @ a
    for backend in names:
        try:
            backends.load(backend)
            _configure_threads(backend)
        except Exception:  # missing or broken: its own row reports why
            continue
        if backend == "torch":
            import torch

            t = torch.from_numpy(a)
            yield backend, lambda: t @ t
        elif backend == "tf":
            from vgg_tf.framework import tf

            t = tf.constant(a)
            yield backend, lambda: tf.linalg.matmul(t, t).numpy()
        elif backend == "jax":
            import jax
            import jax.numpy as jnp

            t, product = jnp.asarray(a), jax.jit(jnp.matmul)
            yield backend, lambda: product(t, t).block_until_ready()
        else:
            from vgg_mxnet.framework import mx

            t = mx.np.array(a)
            yield backend, lambda: mx.np.dot(t, t).wait_to_read()


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


def _ceiling(pythons: dict[str, str]) -> dict:
    """:func:`matmul_ceiling` in every interpreter of ``pythons`` (backend -> interpreter), with its frameworks."""
    by_engine, samples = {}, {}
    for python in dict.fromkeys(pythons.values()):
        ceiling, err = _child(["--ceiling", ",".join(n for n in pythons if pythons[n] == python)], 600, python)
        if ceiling is None:
            raise RuntimeError(f"could not measure the matmul ceiling with {python}: {err}")
        by_engine.update(ceiling["by_engine"])
        samples.update(ceiling["samples"])
    return {"gflop_s": max(by_engine.values()), "by_engine": by_engine, "samples": samples, "size": ceiling["size"]}


def _merge_ceilings(report: dict) -> None:
    """The report's ceiling from every measurement so far (before the rows, and after them once done):
    the fastest product per engine, and the spread of the fastest engine's products."""
    runs = report["matmul_runs"]
    engines = dict.fromkeys(e for run in runs.values() for e in run["by_engine"])
    report["matmul_by_engine"] = {e: max(run["by_engine"].get(e, 0) for run in runs.values()) for e in engines}
    report["matmul_gflop_s"] = max(report["matmul_by_engine"].values())
    best = max(report["matmul_by_engine"], key=report["matmul_by_engine"].get)
    values = [v for run in runs.values() for v in run["samples"].get(best, [])]
    report["matmul_spread"] = {"engine": best, "low": min(values), "high": max(values), "products": len(values),
                               **{when: run["by_engine"].get(best) for when, run in runs.items()}}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(backend: str, arch_name: str, size: int, batch_size: int, seconds: float, data_dir: str | None,
            verify: bool, train_epochs: int, steps: int | None = None, hidden: int = arch.HIDDEN) -> dict:
    """One child's work: build, first step, training and inference throughput, peak memory (and training).

    Launched as W workers, every worker takes its shard of each global batch and all take ``steps`` steps
    (a time limit would let them disagree on when to stop, and a collective would wait forever);
    throughput is then the global batch's, and inference and training are left to the single-process row.
    """
    began = time.perf_counter()
    vgg = backends.load(backend)
    world = vgg.init_distributed()  # threads: cores for one process, cores / W for each of W workers
    row = {"backend": backend, "size": size, "workers": world.processes, "threads": world.threads,
           "engine": world.engine, "import_s": time.perf_counter() - began, "env": backends.environment(backend)}
    blocks, batch_norm = arch.parse(arch_name)
    data = vgg.load_fashion_mnist(batch_size, resize=size, data_dir=data_dir, verify=verify, drop_last=True)
    began = time.perf_counter()
    model = vgg.VGG(blocks, image_size=size, batch_norm=batch_norm, hidden=hidden)
    row["build_s"] = time.perf_counter() - began
    engine = importlib.import_module(f"{vgg.__name__}.trainer").Engine(
        model, training.Recipe(lr=0.01, momentum=0.9, batch_size=batch_size))
    engine.reseed(0)
    train = data.train.sharded(world.rank, world.processes)
    stream = (b for k in itertools.count() for b in train.epoch(k))
    began = time.perf_counter()
    engine.step(*next(stream), 0.01)
    row["first_step_s"] = time.perf_counter() - began
    engine.step(*next(stream), 0.01)  # a second warm-up step: some frameworks finish compiling here
    if backend == "torch" and world.distributed:
        engine.net._set_ddp_runtime_logging_sample_rate(1)  # DDP times its all-reduce on every step
    done, began = 0, time.perf_counter()
    while (done < steps) if steps else (done < 2 or time.perf_counter() - began < seconds):
        engine.step(*next(stream), 0.01)
        done += 1
    row["train_ex_s"] = done * batch_size / (time.perf_counter() - began)
    row["train_gflop_s"] = row["train_ex_s"] * summary.flop_count(blocks, image_size=size, training=True,
                                                                  batch_norm=batch_norm, hidden=hidden) / 1e9
    row["comm_ms"] = _communication_ms(engine, backend, world)
    if world.distributed:
        row["peak_rss_mb"] = peak_rss_mb()
        return row
    images = with_channels(to_float(data.test.images[:batch_size], size), vgg.LAYOUT)
    vgg.predict(model, images, batch_size)  # warm-up / compile
    calls, began = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - began < seconds / 2:
        vgg.predict(model, images, batch_size)
        calls += 1
    row["infer_ex_s"] = calls * len(images) / (time.perf_counter() - began)
    if train_epochs:
        model = vgg.VGG(blocks, image_size=size, batch_norm=batch_norm, hidden=hidden)
        history = vgg.train(model, data, epochs=train_epochs, batch_size=batch_size, progress=False,
                            log=lambda line: print(f"{backend} @{size}: {line}", file=sys.stderr, flush=True),
                            **{**RECIPE, "warmup_epochs": RECIPE["warmup_epochs"] if train_epochs > 1 else 0})
        row["test_acc"] = history["test_acc"][-1]
        row["history"] = history.rows
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def _communication_ms(engine, backend: str, world) -> float | None:
    """Milliseconds per step of gradient all-reduce where the framework reports it: DDP's own timers
    (its prototype logging API). TF and JAX run the all-reduce inside the compiled step, MXNet inside
    its asynchronous engine: neither reports it apart."""
    if backend != "torch" or not world.distributed:
        return None
    stats = engine.net._get_ddp_logging_data()
    comm = stats.get("avg_backward_comm_time")
    return comm / 1e6 if comm else None


def cpu() -> str:
    """The CPU model and its widest vector extensions (figures differ up to 5x between AVX2 and AVX-512 CPUs)."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown")
    flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    wide = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx2", "fma") if f in flags]
    return f"{model}, {' '.join(wide) or 'no AVX2'}"


def machine() -> dict:
    """Cores, CPU model and vector ISA, thread settings, date (each row holds its own versions)."""
    return {"cores": cores(), "cpu": cpu(), "threads": THREADS,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _child(args: list[str], timeout: float, python: str = sys.executable) -> tuple[dict | None, str]:
    """Run ``PYTHON -m common.compare ARGS``; its last stdout line is the JSON result."""
    proc = subprocess.Popen([python, "-m", "common.compare", *args], env=child_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # timeout or Ctrl-C: the child goes too
        proc.kill()
        proc.communicate()
        raise
    lines = [line.split("] ", 1)[-1] for line in out.splitlines()]  # "[rank 0] {...}" from launched workers
    lines = [line for line in lines if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1]), err
    reason = next((line for line in reversed(err.splitlines()) if line.strip() and not line.startswith(" ")),
                  f"exit status {proc.returncode}")
    return None, reason.strip()


def _table(report: dict) -> str:
    """The Markdown table of a report."""
    ceiling = report["matmul_gflop_s"]
    trained = report["train_epochs"]
    lines = ["| backend | size | workers x threads | train ex/s | infer ex/s | GFLOP/s (train) | "
             "% of matmul ceiling | build s | first step s | peak RSS MB |" + (" test acc |" if trained else ""),
             "|---" * (11 if trained else 10) + "|"]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['size']} | {r.get('workers', 1)} | failed: {r['error']} |"
                         + " |" * 6 + (" |" if trained else ""))
            continue
        infer = f"{r['infer_ex_s']:.1f}" if "infer_ex_s" in r else "—"
        lines.append(f"| {r['backend']} | {r['size']} | {r.get('workers', 1)} x {r.get('threads')} | "
                     f"{r['train_ex_s']:.1f} | {infer} | "
                     f"{r['train_gflop_s']:.1f} | {100 * r['train_gflop_s'] / ceiling:.0f} % | {r['build_s']:.2f} | "
                     f"{r['first_step_s']:.2f} | {r['peak_rss_mb']:.0f} |"
                     + (f" {r['test_acc']:.3f} |" if trained and "test_acc" in r else " — |" if trained else ""))
    return "\n".join(lines)


def scaling(rows: list[dict]) -> list[dict]:
    """For every row with W > 1 workers: its throughput against the one-process row of the same backend
    and size (both use all cores), and the scaling efficiency T_W / (W x T_1)."""
    single = {(r["backend"], r["size"]): r for r in rows if "error" not in r and r.get("workers", 1) == 1}
    out = []
    for r in rows:
        one = single.get((r["backend"], r["size"]))
        if "error" in r or r.get("workers", 1) == 1 or one is None:
            continue
        relative = r["train_ex_s"] / one["train_ex_s"]
        out.append({"backend": r["backend"], "size": r["size"], "workers": r["workers"], "engine": r["engine"],
                    "relative": relative, "efficiency": relative / r["workers"], "comm_ms": r.get("comm_ms"),
                    "step_ms": 1000 * r["batch_size"] / r["train_ex_s"]})
    return out


def _scaling_table(report: dict) -> str:
    rows = scaling(report["rows"])
    if not rows:
        return ""
    lines = ["Data-parallel engines: W worker processes on the same cores as one process (cores / W threads "
             f"each). On {report['machine']['cores']} cores this measures each engine's overhead, not a "
             "speed-up: the workers share the cores one process already used.", "",
             "| backend | size | workers | engine | ms per step | of which all-reduce (ms) | "
             "throughput vs 1 process | scaling efficiency T_W / (W x T_1) |", "|---" * 8 + "|"]
    for r in rows:
        comm = f"{r['comm_ms']:.1f}" if r["comm_ms"] else "not reported"
        lines.append(f"| {r['backend']} | {r['size']} | {r['workers']} | {r['engine']} | {r['step_ms']:.0f} | "
                     f"{comm} | {r['relative']:.2f} | {r['efficiency']:.2f} |")
    return "\n".join(lines)


def _charts(report: dict, out: Path) -> list[Path]:
    from matplotlib.figure import Figure  # not pyplot: no global backend switch, no GUI machinery

    rows = [r for r in report["rows"] if "error" not in r and r.get("workers", 1) == 1]
    paths = []
    if not rows:
        return paths
    names = list(dict.fromkeys(r["backend"] for r in rows))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    for key, label, stem in (("train_ex_s", "training examples/s", "train_throughput"),
                             ("infer_ex_s", "inference examples/s", "infer_throughput"),
                             ("peak_rss_mb", "peak RSS (MB)", "memory")):
        fig = Figure(figsize=(3.2 * len(sizes), 3), dpi=110)
        axes = fig.subplots(1, len(sizes), squeeze=False)
        for ax, size in zip(axes[0], sizes):
            values = {r["backend"]: r[key] for r in rows if r["size"] == size}
            ax.bar(list(values), list(values.values()), color=[f"C{names.index(n)}" for n in values])
            ax.set_title(f"{size}x{size}")
            ax.set_ylabel(label)
        fig.tight_layout()
        paths.append(_save_fig(fig, out / f"{stem}.png"))
    curves = [r for r in rows if "history" in r]
    if curves:
        fig = Figure(figsize=(8, 3), dpi=110)
        left, right = fig.subplots(1, 2)
        for r in curves:
            epochs = [h["epoch"] for h in r["history"]]
            left.plot(epochs, [h["train_loss"] for h in r["history"]], label=f"{r['backend']} @{r['size']}")
            right.plot(epochs, [h["test_acc"] for h in r["history"]], label=f"{r['backend']} @{r['size']}")
        left.set(xlabel="epoch", ylabel="train loss")
        right.set(xlabel="epoch", ylabel="test accuracy")
        right.legend()
        fig.tight_layout()
        paths.append(_save_fig(fig, out / "curves.png"))
    return paths


def _save_fig(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic.write_bytes(path, buf.getvalue())


def _engines(by_engine: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in by_engine.items())


def _spread(spread: dict) -> str:
    """How steady the ceiling was: the fastest engine before and after the rows, and all its products."""
    when = ", ".join(f"{k} {spread[k]:.0f}" for k in ("before", "after") if spread.get(k))
    return (f"{spread['engine']} measured {when}; its {spread['products']} products ran at "
            f"{spread['low']:.0f}-{spread['high']:.0f} GFLOP/s")


def _environments(report: dict) -> str:
    """One line per backend: the interpreter it ran under, with its Python, NumPy and framework versions."""
    seen = {}
    for r in report["rows"]:  # a failed row's env holds only its interpreter
        seen.setdefault(r["backend"], r["env"])
    lines = ["| backend | Python | NumPy | framework | interpreter |", "|---|---|---|---|---|"]
    for name, env in seen.items():
        framework = ", ".join(f"{d} {v}" for d, v in env.items() if d not in ("python", "numpy", "executable"))
        lines.append(f"| {name} | {env.get('python', '?')} | {env.get('numpy', '?')} | {framework or '?'} | "
                     f"`{env['executable']}` |")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    """compare.json, compare.md and the PNG charts, each written atomically."""
    atomic.write_text(out / "compare.json", json.dumps(report, indent=1))
    m = report["machine"]
    size = report["matmul_runs"]["before"]["size"]
    head = "" if report["hidden"] == arch.HIDDEN else f", hidden layers {report['hidden']} wide"
    md = [f"# vgg compare: {report['arch']}{head}, batch {report['batch_size']}", "",
          f"`{report['command']}`", "",
          f"{m['date']}; {m['cores']} cores ({m['cpu']}); float32 matmul ceiling "
          f"{report['matmul_gflop_s']:.0f} GFLOP/s (the fastest {size}x{size} product: "
          f"{_engines(report['matmul_by_engine'])}; {_spread(report['matmul_spread'])})", "",
          _environments(report), "",
          "Threads: " + "; ".join(f"{k}: {v}" for k, v in m["threads"].items()), "", _table(report), "",
          _scaling_table(report), ""]
    atomic.write_text(out / "compare.md", "\n".join(md))
    _charts(report, out)


def run(names: list[str], arch_name: str, sizes: list[int], batch_size: int, seconds: float, train_epochs: int,
        out: Path, data_dir: str | None = None, verify: bool = True, command: str = "",
        log=print, workers: list[int] = (1,), pythons: dict[str, str] | None = None,
        hidden: int = arch.HIDDEN) -> dict:
    """Measure every backend at every size, one child each; rows of failed children carry their error.

    ``pythons`` maps a backend to the interpreter of the environment that has it (default: this one)."""
    pythons = {name: (pythons or {}).get(name, sys.executable) for name in names}
    report = {"command": command, "arch": arch_name, "hidden": hidden, "batch_size": batch_size, "seconds": seconds,
              "train_epochs": train_epochs, "machine": machine(), "pythons": pythons,
              "matmul_runs": {"before": _ceiling(pythons)}, "rows": []}
    _merge_ceilings(report)  # measured again after the rows: shared machines drift by tens of percent
    ceiling = {"gflop_s": report["matmul_gflop_s"]}
    log(f"float32 matmul ceiling: {ceiling['gflop_s']:.0f} GFLOP/s ({_engines(report['matmul_by_engine'])}); "
        f"{cores()} cores for every backend")
    log(f"{'backend':8} {'size':>5} {'W':>3} {'train ex/s':>11} {'infer ex/s':>11} {'GFLOP/s':>8} {'%ceil':>6} "
        f"{'build s':>8} {'1st step s':>10} {'RSS MB':>7}" + (f" {'test acc':>8}" if train_epochs else ""))
    for name, size, w in itertools.product(names, sizes, sorted(workers)):
        print(f"measuring {name} at {size}x{size} with {w} worker(s) ...", end="\r", file=sys.stderr, flush=True)
        args = ["--worker", name, "--arch", arch_name, "--size", str(size), "--batch-size", str(batch_size),
                "--seconds", str(seconds), "--train-epochs", str(train_epochs if w == 1 else 0),
                "--hidden", str(hidden)]
        if w > 1:  # every worker takes the same number of steps: about --seconds at one process's pace
            one = next((r for r in report["rows"] if (r["backend"], r["size"], r.get("workers")) == (name, size, 1)
                        and "error" not in r), None)
            steps = max(3, round(seconds * one["train_ex_s"] / batch_size)) if one else 10
            args += ["--launch", str(w), "--steps", str(steps)]
        args += ["--data-dir", data_dir] if data_dir else []
        args += [] if verify else ["--no-verify"]
        budget = 600 + 4 * seconds + train_epochs * 3600
        try:
            row, err = _child(args, budget, pythons[name])
        except subprocess.TimeoutExpired:
            row, err = None, f"timed out after {budget:.0f} s"
        print("\r\033[K", end="", file=sys.stderr, flush=True)  # clear the progress line
        if row is None:
            row = {"backend": name, "size": size, "workers": w, "error": err, "env": {"executable": pythons[name]}}
            log(f"{name:8} {size:>5} {w:>3} failed: {err}")
        else:
            row["batch_size"] = batch_size
            log(f"{name:8} {size:>5} {w:>3} {row['train_ex_s']:11.1f} "
                f"{(format(row['infer_ex_s'], '11.1f') if 'infer_ex_s' in row else '—'.rjust(11))} "
                f"{row['train_gflop_s']:8.1f} {100 * row['train_gflop_s'] / ceiling['gflop_s']:5.0f}% "
                f"{row['build_s']:8.2f} {row['first_step_s']:10.2f} {row['peak_rss_mb']:7.0f}"
                + (f" {row['test_acc']:8.3f}" if "test_acc" in row else ""))
        report["rows"].append(row)
        write_report(report, out)
    report["matmul_runs"]["after"] = _ceiling(pythons)
    _merge_ceilings(report)
    spread = report["matmul_spread"]
    log(f"float32 matmul ceiling: {report['matmul_gflop_s']:.0f} GFLOP/s, the fastest of before and after the rows "
        f"({spread['engine']}: before {spread['before']:.0f}, after {spread['after']:.0f}; its {spread['products']} "
        f"products {spread['low']:.0f}-{spread['high']:.0f}); the % of ceiling in the report uses it")
    write_report(report, out)
    return report


def _main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="a vgg compare child process (internal)")
    p.add_argument("--ceiling", metavar="BACKENDS", help="measure the matmul ceiling with these")
    p.add_argument("--worker")
    p.add_argument("--arch", default="small")
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--train-epochs", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--launch", type=int, default=1, help="run the worker as this many data-parallel processes")
    p.add_argument("--steps", type=int, default=None, help="a fixed number of timed steps")
    p.add_argument("--hidden", type=int, default=arch.HIDDEN)
    a = p.parse_args()
    if a.launch > 1:
        argv = sys.argv[1:]
        at = argv.index("--launch")
        rest = argv[:at] + argv[at + 2:]  # each worker measures; this process only launches them
        sys.exit(launch.launch(a.worker, "common.compare", rest, a.launch,
                               threads=distributed.threads_per_worker(a.launch), prog="vgg compare"))
    launch.die_with_parent()
    if a.ceiling:
        print(json.dumps(matmul_ceiling(a.ceiling.split(","))))
        return
    row = measure(a.worker, a.arch, a.size, a.batch_size, a.seconds, a.data_dir, not a.no_verify,
                  a.train_epochs, a.steps, a.hidden)
    if backends.load(a.worker).current_world().is_chief:
        print(json.dumps(row))


if __name__ == "__main__":
    _main()
