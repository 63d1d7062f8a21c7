"""``vgg compare``: the four backends measured on the same work, side by side, one subprocess each.

Each (backend, resolution) runs in its own child process (its memory is its own, no thread pool starves
another) with the same thread settings, under the interpreter given for that backend (so JAX can come from
a NumPy 2 environment and MXNet from a NumPy 1 one); the parent prints progress, collects one JSON line per
child and rewrites the report after every row, so Ctrl-C keeps what was measured. The children's work is
``common.tools.measure``, the report ``common.tools.compare_report``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from common.core import arch
from common.core.config import ModelConfig
from common.runtime import distributed
from common.runtime.machine import cores
from common.tools import launch, loading
from common.tools.compare_report import engines, machine, merge_ceilings, write_report
from common.tools.measure import matmul_ceiling, measure

ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """The environment of every child: the same thread count for every framework and BLAS, and only the
    project's own modules importable by their names (never the working folder's)."""
    n = str(cores())
    return launch.safe_path_env({**os.environ, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
                                 "MKL_NUM_THREADS": n, "TF_CPP_MIN_LOG_LEVEL": "2"})


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


def _child(args: list[str], timeout: float, python: str = sys.executable) -> tuple[dict | None, str]:
    """Run ``PYTHON -m common.tools.compare ARGS``; its last stdout line is the JSON result."""
    proc = subprocess.Popen([python, "-m", "common.tools.compare", *args], env=child_env(), cwd=ROOT,
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


def run(names: list[str], arch_name: str, sizes: list[int], batch_size: int, seconds: float, train_epochs: int,
        out: Path, data_dir: str | None = None, verify: bool = True, command: str = "",
        log=print, workers: list[int] = (1,), pythons: dict[str, str] | None = None,
        hidden: int = arch.HIDDEN, precisions: list[str] = ("fp32",),
        refused: dict[tuple[str, str], str] | None = None, device: str = "cpu") -> dict:
    """Measure every backend at every size and precision, one child each; rows of failed children carry
    their error, and a (backend, precision) pair in ``refused`` gets its reason as its row without running.

    ``pythons`` maps a backend to the interpreter of the environment that has it (default: this one)."""
    pythons = {name: (pythons or {}).get(name, sys.executable) for name in names}
    blocks, batch_norm = arch.parse(arch_name)
    refused = refused or {}
    report = {"command": command, "arch": arch_name, "hidden": hidden, "batch_size": batch_size, "seconds": seconds,
              "precisions": list(precisions), "device": device, "train_epochs": train_epochs, "machine": machine(),
              "pythons": pythons,
              "matmul_runs": {"before": _ceiling(pythons)}, "rows": []}
    merge_ceilings(report)  # measured again after the rows: shared machines drift by tens of percent
    ceiling = {"gflop_s": report["matmul_gflop_s"]}
    log(f"float32 matmul ceiling: {ceiling['gflop_s']:.0f} GFLOP/s ({engines(report['matmul_by_engine'])}); "
        f"{cores()} cores for every backend")
    log(f"{'backend':8} {'size':>5} {'prec':>5} {'W':>3} {'train ex/s':>11} {'infer ex/s':>11} {'GFLOP/s':>8} "
        f"{'%ceil':>6} {'build s':>8} {'1st step s':>10} {'RSS MB':>7}" + (f" {'test acc':>8}" if train_epochs else ""))
    for name, size, p, w in itertools.product(names, sizes, precisions, sorted(workers)):
        if (name, p) in refused:
            report["rows"].append({"backend": name, "size": size, "precision": p, "workers": w,
                                   "error": refused[name, p], "env": {"executable": pythons[name]}})
            continue
        print(f"measuring {name} at {size}x{size} in {p} with {w} worker(s) ...", end="\r", file=sys.stderr,
              flush=True)
        config = ModelConfig(blocks, image_size=size, batch_norm=batch_norm, hidden=hidden, precision=p)
        args = ["--worker", name, "--config", json.dumps(config.to_dict()), "--batch-size", str(batch_size),
                "--seconds", str(seconds), "--train-epochs", str(train_epochs if w == 1 else 0),
                "--device", device]
        if w > 1:  # every worker takes the same number of steps: about --seconds at one process's pace
            one = next((r for r in report["rows"] if (r["backend"], r["size"], r.get("precision"), r.get("workers"))
                        == (name, size, p, 1) and "error" not in r), None)
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
            row = {"backend": name, "size": size, "precision": p, "workers": w, "error": err,
                   "env": {"executable": pythons[name]}}
            log(f"{name:8} {size:>5} {p:>5} {w:>3} failed: {err}")
        else:
            row["batch_size"] = batch_size
            log(f"{name:8} {size:>5} {p:>5} {w:>3} {row['train_ex_s']:11.1f} "
                f"{(format(row['infer_ex_s'], '11.1f') if 'infer_ex_s' in row else '—'.rjust(11))} "
                f"{row['train_gflop_s']:8.1f} {100 * row['train_gflop_s'] / ceiling['gflop_s']:5.0f}% "
                f"{row['build_s']:8.2f} {row['first_step_s']:10.2f} {row['peak_rss_mb']:7.0f}"
                + (f" {row['test_acc']:8.3f}" if "test_acc" in row else ""))
        report["rows"].append(row)
        write_report(report, out)
    report["matmul_runs"]["after"] = _ceiling(pythons)
    merge_ceilings(report)
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
    p.add_argument("--config", type=json.loads, help="the model's ModelConfig, as JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--train-epochs", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--launch", type=int, default=1, help="run the worker as this many data-parallel processes")
    p.add_argument("--steps", type=int, default=None, help="a fixed number of timed steps")
    a = p.parse_args()
    if a.launch > 1:
        argv = sys.argv[1:]
        at = argv.index("--launch")
        rest = argv[:at] + argv[at + 2:]  # each worker measures; this process only launches them
        sys.exit(launch.launch(a.worker, "common.tools.compare", rest, a.launch,
                               threads=distributed.threads_per_worker(a.launch), prog="vgg compare"))
    if a.ceiling:
        print(json.dumps(matmul_ceiling(a.ceiling.split(","))))
        return
    row = measure(a.worker, ModelConfig.from_dict(a.config, "--config"), a.batch_size, a.seconds, a.data_dir,
                  not a.no_verify, a.train_epochs, a.steps, a.device)
    if loading.backend(a.worker).current_world().is_chief:
        print(json.dumps(row))


if __name__ == "__main__":
    _main()
