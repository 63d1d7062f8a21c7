"""``vgg compare``: the four backends measured on the same work, side by side, one subprocess each.

The cells (backend x size x precision x workers) run in interleaved rounds, every cell once per round,
and the report gives each figure's median and range over the rounds. Each cell runs in its own child
process (its memory is its own, no thread pool starves another) with the same thread settings, under the
interpreter given for that backend (so JAX can come from a NumPy 2 environment and MXNet from a NumPy 1
one); the parent prints progress, collects one JSON line per child and rewrites the report after every
run, so Ctrl-C keeps what was measured; at the end it writes the run's record beside the report. The
children (``common.tools.children``) do ``common.tools.measure``'s work on the model config they are given;
the report and the record are ``common.tools.compare_report``'s.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from common.core import arch
from common.core.config import ModelConfig
from common.runtime import capability, distributed
from common.runtime.machine import cores, cpu_flags, machine
from common.tools import children, launch, loading, records
from common.tools.compare_report import ceiling_of, console_table, engines, merge_ceilings, record, write_report
from common.tools.measure import MIN_REQUESTS, SERVED, matmul_ceiling, measure  # noqa: F401  (MIN_REQUESTS: the CLI's)
from common.tools.report_types import CeilingRun, CompareReport, CompareRun, Machine, MeasuredRun
from common.tools.spreads import cell as cell_of, summarise


def _ceiling(pythons: dict[str, str], device: str = "cpu", precision: str = "fp32") -> CeilingRun:
    """:func:`matmul_ceiling` on ``device`` in ``precision`` in every interpreter of ``pythons`` (backend ->
    interpreter), with its frameworks."""
    by_engine: dict[str, float] = {}
    samples: dict[str, list[float]] = {}
    size = 0
    for python in dict.fromkeys(pythons.values()):
        ceiling, err = _child(["--ceiling", ",".join(n for n in pythons if pythons[n] == python), "--device", device,
                               "--precision", precision], 600, python)
        if ceiling is None:
            raise RuntimeError(f"could not measure the {precision} matmul ceiling with {python}: {err}")
        by_engine.update(ceiling["by_engine"])
        samples.update(ceiling["samples"])
        size = ceiling["size"]
    return {"gflop_s": max(by_engine.values()), "by_engine": by_engine, "samples": samples, "size": size}


def own_ceilings(precisions: Sequence[str], device: str,
                 flags: set[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The precisions besides fp32 whose products have a ceiling of their own on ``device`` (a GPU's every
    format; a CPU's bf16 with AVX-512 BF16 or AMX), and why each other one has none."""
    flags = cpu_flags() if flags is None else flags
    own: list[str] = []
    skipped: dict[str, str] = {}
    for p in dict.fromkeys(precisions):
        if p == "fp32":
            continue
        if device == "gpu" or (p == "bf16" and any(f in flags for f in capability.BF16_FLAGS)):
            own.append(p)
        else:
            skipped[p] = f"this CPU has no {p} product instructions: its {p} products are emulated"
    return own, skipped


def _child(args: list[str], timeout: float, python: str = sys.executable) -> tuple[dict | None, str]:
    """Run ``PYTHON -m common.tools.compare ARGS``: (its last record, "") or (None, its error in one line)."""
    found: list[dict] = []
    error = children.run("common.tools.compare", args, found.append, python=python, timeout=timeout)
    if error is None and found:
        return found[-1], ""
    return None, error or "it reported nothing"


@dataclass(frozen=True)
class Job:
    """What every child of one ``vgg compare`` is told, besides its cell and round."""
    config: ModelConfig  # the model, less each cell's size and precision
    batch_size: int
    seconds: float
    train_epochs: int
    device: str
    data_dir: str | None
    verify: bool
    requests: int
    pythons: dict[str, str]


def _args(job: Job, config: ModelConfig, name: str, train_epochs: int) -> list[str]:
    """The child's command line for one cell."""
    args = ["--worker", name, "--config", json.dumps(config.to_dict()), "--batch-size", str(job.batch_size),
            "--seconds", str(job.seconds), "--train-epochs", str(train_epochs), "--device", job.device,
            "--requests", str(job.requests)]
    args += ["--data-dir", job.data_dir] if job.data_dir else []
    return args + ([] if job.verify else ["--no-verify"])


def _run_cell(job: Job, cell: tuple, round_: int, runs: list[CompareRun]) -> CompareRun:
    """One child measuring ``cell`` (backend, size, precision, workers) in ``round_``: its run, or its error.
    ``--train-epochs`` trains in round 1 only; W workers take as many steps as this round's one-process
    run of the cell took in about ``--seconds``."""
    name, size, p, w = cell
    config = dataclasses.replace(job.config, image_size=size, precision=p)
    args = _args(job, config, name, job.train_epochs if w == 1 and round_ == 1 else 0)
    if w > 1:  # every worker takes the same number of steps: about --seconds at one process's pace
        one = next((r for r in runs if r["round"] == round_ and cell_of(r) == (name, size, p, 1)
                    and "error" not in r), None)
        steps = max(3, round(job.seconds * one["train_ex_s"] / job.batch_size)) if one else 10
        args += ["--launch", str(w), "--steps", str(steps)]
    budget = 600 + 4 * job.seconds + job.train_epochs * 3600 + len(SERVED) * job.requests
    try:
        row, err = _child(args, budget, job.pythons[name])
    except subprocess.TimeoutExpired:
        row, err = None, f"timed out after {budget:.0f} s"
    if row is None:
        return {"backend": name, "size": size, "precision": p, "workers": w, "error": err, "round": round_,
                "env": {"executable": job.pythons[name]}}
    return cast(MeasuredRun, {**row, "batch_size": job.batch_size, "round": round_})  # measure.measure's row


def _line(run: CompareRun, rounds: int, ceiling: float) -> str:
    """A run's console line, as it finishes."""
    when = f"{run['round']}/{rounds}"
    head = f"{when:>5} {run['backend']:8} {run['size']:>5} {run['precision']:>5} {run['workers']:>3}"
    if "error" in run:
        return f"{head} failed: {run['error']}"
    infer = format(run["infer_ex_s"], "11.1f") if "infer_ex_s" in run else "—".rjust(11)
    split = (f" {run['forward_ms']:8.1f} {run['backward_update_ms']:10.1f}" if "forward_ms" in run
             else " " + "—".rjust(8) + " " + "—".rjust(10))
    served = run.get("latency", {}).values()
    p50 = f" {'/'.join(format(e['p50_ms'], '.2f') if 'p50_ms' in e else 'failed' for e in served):>23}" \
        if served else ""
    return (f"{head} {run['train_ex_s']:11.1f} {infer} {run['train_gflop_s']:8.1f} "
            f"{100 * run['train_gflop_s'] / ceiling:5.0f}% {run['build_s']:8.2f} {run['first_step_s']:10.2f} "
            f"{run['peak_rss_mb']:7.0f}{split}{p50}" + (f" {run['test_acc']:8.3f}" if "test_acc" in run else ""))


def run(names: list[str], config: ModelConfig, sizes: list[int], batch_size: int, seconds: float,
        train_epochs: int, out: Path, data_dir: str | None = None, verify: bool = True, command: str = "",
        log: Callable[[str], None] = print, workers: Sequence[int] = (1,), pythons: dict[str, str] | None = None,
        precisions: Sequence[str] = ("fp32",), refused: dict[tuple[str, str], str] | None = None,
        device: str = "cpu", rounds: int = 3, requests: int = 0) -> CompareReport:
    """Measure every backend at every size, precision and worker count, one child each, in ``rounds``
    interleaved rounds (every cell once per round); rows summarise each cell's rounds (median and range),
    rows of failed children carry their error, and a (backend, precision) pair in ``refused`` gets its
    reason as its row without running. ``requests`` > 0 also measures batch-1 serving latency.

    ``config`` is the model; each cell replaces its image size and precision. ``pythons`` maps a backend to
    the interpreter of the environment that has it (default: this one)."""
    began = time.perf_counter()
    pythons = {name: (pythons or {}).get(name, sys.executable) for name in names}
    refused = refused or {}
    job = Job(config, batch_size, seconds, train_epochs, device, data_dir, verify, requests, pythons)
    report: CompareReport = {
        "command": command, "arch": arch.name_of(config.arch, config.batch_norm), "hidden": config.hidden,
        "batch_size": batch_size, "seconds": seconds, "precisions": list(precisions), "device": device,
        "train_epochs": train_epochs, "machine": {**cast(Machine, machine()), "system": records.machine()},
        "commit": list(records.commit()), "pythons": pythons, "rounds": rounds, "latency_requests": requests,
        "matmul_runs": {"before": _ceiling(pythons, device)}, "runs": [], "rows": []}
    own, report["ceilings_skipped"] = own_ceilings(precisions, device)
    report["ceiling_runs"] = {p: {"before": _ceiling(pythons, device, p)} for p in own}
    merge_ceilings(report)  # measured again after the rows: shared machines drift by tens of percent
    ceiling = report["matmul_gflop_s"]
    for p, c in report["ceilings"].items():
        log(f"{p} matmul ceiling: {c['gflop_s']:.0f} GFLOP/s ({engines(c['by_engine'])})")
    log(f"float32 matmul ceiling: {ceiling:.0f} GFLOP/s ({engines(report['matmul_by_engine'])}); "
        f"{cores()} cores for every backend; {rounds} interleaved round(s)"
        + (f"; --train-epochs {train_epochs} trains once, in round 1" if train_epochs else ""))
    log(f"{'round':>5} {'backend':8} {'size':>5} {'prec':>5} {'W':>3} {'train ex/s':>11} {'infer ex/s':>11} "
        f"{'GFLOP/s':>8} {'%ceil':>6} {'build s':>8} {'1st step s':>10} {'RSS MB':>7} {'fwd ms':>8} "
        f"{'bwd+upd ms':>10}" + (f" {'p50 ms live/native/onnx':>23}" if requests else "")
        + (f" {'test acc':>8}" if train_epochs else ""))
    cells = list(itertools.product(names, sizes, precisions, sorted(workers)))
    for round_ in range(1, rounds + 1):
        for cell in cells:
            name, size, p, w = cell
            if (name, p) in refused:  # its reason, once (the notes printed it)
                if round_ > 1:
                    continue
                report["runs"].append({"backend": name, "size": size, "precision": p, "workers": w, "round": 1,
                                       "error": refused[name, p], "env": {"executable": pythons[name]}})
            else:
                print(f"round {round_}/{rounds}: measuring {name} at {size}x{size} in {p} with {w} worker(s) ...",
                      end="\r", file=sys.stderr, flush=True)
                report["runs"].append(_run_cell(job, cell, round_, report["runs"]))
                print("\r\033[K", end="", file=sys.stderr, flush=True)  # clear the progress line
                log(_line(report["runs"][-1], rounds, ceiling_of(report, p)))
            report["rows"] = [summarise([r for r in report["runs"] if cell_of(r) == c])
                              for c in cells if any(cell_of(r) == c for r in report["runs"])]
            write_report(report, out)
    report["matmul_runs"]["after"] = _ceiling(pythons, device)
    for p, runs in report["ceiling_runs"].items():
        runs["after"] = _ceiling(pythons, device, p)
    merge_ceilings(report)
    spread = report["matmul_spread"]
    log(f"float32 matmul ceiling: {report['matmul_gflop_s']:.0f} GFLOP/s, the fastest of before and after the rows "
        f"({spread['engine']}: before {spread['before']:.0f}, after {spread['after']:.0f}; its {spread['products']} "
        f"products {spread['low']:.0f}-{spread['high']:.0f}); the % of ceiling in the report uses it")
    report["wall_s"] = time.perf_counter() - began  # the whole command, ceilings and every round included
    write_report(report, out)
    log(console_table(report))
    if any("error" not in row for row in report["rows"]):  # a record holds what was measured, not only failures
        _write_record(report, out, log)
    return report


def _write_record(report: CompareReport, out: Path, log: Callable[[str], None]) -> None:
    """The run's record beside its report; where it lacks provenance (no git checkout) the report stays and
    the reason is printed."""
    try:
        log(f"record: {records.write(record(report, str(out / 'compare.json')), out)}")
    except records.RecordError as exc:
        log(f"no record written: {exc}")


def _main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="a vgg compare child process (internal)")
    p.add_argument("--ceiling", metavar="BACKENDS", help="measure the matmul ceiling with these")
    p.add_argument("--worker")
    p.add_argument("--config", type=json.loads, help="the model's ModelConfig, as JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", help="the ceiling's product format")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--train-epochs", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--launch", type=int, default=1, help="run the worker as this many data-parallel processes")
    p.add_argument("--steps", type=int, default=None, help="a fixed number of timed steps")
    p.add_argument("--requests", type=int, default=0, help="batch-1 requests per server (0: no latency)")
    a = p.parse_args()
    if a.launch > 1:
        argv = sys.argv[1:]
        at = argv.index("--launch")
        rest = argv[:at] + argv[at + 2:]  # each worker measures; this process only launches them
        sys.exit(launch.launch(a.worker, "common.tools.compare", rest, a.launch,
                               threads=distributed.threads_per_worker(a.launch), prog="vgg compare"))
    if a.ceiling:
        children.emit(matmul_ceiling(a.ceiling.split(","), device=a.device, precision=a.precision))
        return
    row = measure(a.worker, ModelConfig.from_dict(a.config, "--config"), a.batch_size, a.seconds, a.data_dir,
                  not a.no_verify, a.train_epochs, a.steps, a.device, a.requests)
    if loading.backend(a.worker).current_world().is_chief:
        children.emit(row)


if __name__ == "__main__":
    _main()
