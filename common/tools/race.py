"""``vgg race``: time to a target test accuracy, every backend from the same recipe, each run its own process.

Before the start one child checks that the contenders compute the same function (``common.tools.parity``
on the raced model, precision and SGD recipe); a backend that disagrees, or cannot run the precision, is
not raced and the report says why. Then every (seed, backend) runs in its own child
(``common.tools.children``, as ``vgg compare``'s do), interleaved by seed. A child trains with the shared
loop (``training.loop``: the same steps ``vgg train`` takes), whose hook evaluates every ``eval_every`` of
an epoch, emits one record per evaluation and stops at the target; the clock is wall-clock seconds since
the parent started the child. The report (``common.tools.race_report``) is rewritten after every run, so
Ctrl-C keeps what finished and ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, cast

from common.core import arch, backends, precision as precisions
from common.core.config import ModelConfig
from common.core.precision import PrecisionError
from common.data import fashion_mnist
from common.runtime import capability, run_folder, training
from common.runtime.contract import Backend
from common.runtime.machine import machine
from common.serving import formats
from common.tools import children, parity, race_report, records
from common.tools.report_types import (
    Evaluation,
    Machine,
    ParityCell,
    ParityMatrices,
    Provenance,
    RaceParity,
    RaceRecipe,
    RaceReport,
    RaceRun,
    RaceSettings,
)

#: the parity check's small batch and SGD steps
PARITY_BATCH, PARITY_STEPS = 8, 3
#: every file a race writes into --out (anything else there is another tool's, and refused), its records too
FILES = ("race.json", "race.md", *race_report.CHARTS, run_folder.LOCK, f"*-{race_report.KIND}-*.json")
#: settings a --resume may change: more (or fewer) seeds extend the same race
MAY_CHANGE = ("seeds",)
#: the model's fields that the settings hold under names of their own (the seed is each run's); any other
#: field that differs from its default is held in the settings' "config"
NAMED_FIELDS = ("arch", "batch_norm", "hidden", "image_size", "precision", "seed")


def settings(args: argparse.Namespace, config: ModelConfig) -> RaceSettings:
    """The race's settings from ``vgg race``'s arguments and the raced model's ``config``, checked (a bad
    recipe is a ValueError here)."""
    recipe: RaceRecipe = {"lr": args.lr, "batch_size": args.batch_size, "momentum": args.momentum,
                          "weight_decay": args.weight_decay, "schedule": args.schedule,
                          "warmup_epochs": args.warmup_epochs, "crop_padding": args.crop_padding, "flip": args.flip,
                          "label_smoothing": args.label_smoothing, "test_flip": args.test_flip}
    training.Recipe(epochs=args.max_epochs, **recipe)  # refuses e.g. a warm-up longer than the race
    plan: RaceSettings = {"backends": list(dict.fromkeys(args.backends)), "arch": _arch_name(args, config),
            "hidden": config.hidden, "resize": config.image_size, "precision": config.precision,
            "device": args.device, "target": args.target, "max_epochs": args.max_epochs,
            "eval_every": args.eval_every, "seeds": args.seeds, "recipe": recipe, "limit": args.limit,
            "eval_limit": args.eval_limit, "data_dir": args.data_dir, "verify": not args.no_verify}
    other = {f.name: getattr(config, f.name) for f in fields(ModelConfig)
             if f.name not in NAMED_FIELDS and getattr(config, f.name) != f.default}
    if other:
        plan["config"] = other
    return plan


def _arch_name(args: argparse.Namespace, config: ModelConfig) -> str:
    """The raced arch's name: ``--arch`` as the user spelled it where it names ``config``'s arch (``A`` and
    ``vgg11`` are one arch), else its own name."""
    given = getattr(args, "arch", None)
    if given is not None and arch.parse(given) == (config.arch, config.batch_norm):
        return given
    return arch.name_of(config.arch, config.batch_norm)


def config_of(plan: RaceSettings, seed: int) -> ModelConfig:
    """The raced model, its weights initialised from ``seed``."""
    blocks, batch_norm = arch.parse(plan["arch"])
    return ModelConfig(blocks, image_size=plan["resize"], seed=seed, batch_norm=batch_norm, hidden=plan["hidden"],
                       precision=plan["precision"], **plan.get("config", {}))


def recipe_of(plan: RaceSettings, seed: int) -> training.Recipe:
    """The raced recipe for ``seed``: its schedule spans ``max_epochs``, the most a run may take."""
    return training.Recipe(epochs=plan["max_epochs"], seed=seed, **plan["recipe"])


def evaluation_steps(per_epoch: int, epochs: int, every: float) -> list[int]:
    """The step counts after which a run evaluates: every ``every`` of an epoch (rounded to a step, at least
    one apart) and after the last step."""
    total = per_epoch * epochs
    points = {max(1, round(m * every * per_epoch)) for m in range(1, math.ceil(total / (every * per_epoch)) + 1)}
    return sorted({p for p in points if p <= total} | {total})


def to_target(engine: training.Engine, data: Any, recipe: training.Recipe, target: float, every: float,
              started: float, emit: Callable[[dict], None]) -> None:
    """Train with ``engine`` as ``recipe`` says, in the shared loop (``training.loop``: its lr, dropout seeds
    and shuffles), evaluate on the test split every ``every`` of an epoch and ``emit`` each evaluation; stop
    at the first at or above ``target``. ``started`` is the ``time.time()`` the run's clock counts from."""
    train, test = training.batches_for(data, recipe)
    per_epoch = len(train)
    due = set(evaluation_steps(per_epoch, recipe.epochs, every))
    losses: list[float] = []  # since the last evaluation

    def evaluate(step: training.Step) -> bool:
        losses.append(step.loss)
        if step.done not in due:
            return False
        evaluated = time.perf_counter()
        accuracy = engine.evaluate(test)
        emit({"event": "evaluation", "wall_s": time.time() - started, "train_s": step.train_s,
              "eval_s": time.perf_counter() - evaluated, "epoch": step.done / per_epoch, "steps": step.done,
              "test_acc": accuracy, "train_loss": sum(losses) / len(losses)})
        losses.clear()
        return accuracy >= target

    training.loop(engine, train, recipe, on_step=evaluate)


def _worker(a: argparse.Namespace) -> None:
    """A race child: one backend, one seed, from import to the target; each record one tagged JSON line."""
    import warnings

    from common.runtime.machine import peak_rss_mb
    from common.tools import loading

    emit = children.emit
    plan, seed = json.loads(a.plan), a.seed
    began = time.perf_counter()
    vgg = loading.backend(a.worker)
    vgg.init_distributed(device=plan["device"])  # threads: every core, as vgg train and vgg compare give one process
    imported = time.perf_counter()
    data = vgg.load_fashion_mnist(plan["recipe"]["batch_size"], resize=plan["resize"], data_dir=plan["data_dir"],
                                  seed=seed, limit=plan["limit"], eval_limit=plan.get("eval_limit"),
                                  verify=plan["verify"])
    loaded = time.perf_counter()
    with warnings.catch_warnings():  # the parent printed the precision's note once
        warnings.simplefilter("ignore", precisions.PrecisionWarning)
        model = vgg.VGG(config_of(plan, seed))
    built = time.perf_counter()
    recipe = recipe_of(plan, seed)
    engine = vgg.Engine(model, recipe)
    emit({"event": "start", "interpreter_s": a.began - a.started, "import_s": imported - began,
          "data_s": loaded - imported, "build_s": built - loaded, "engine_s": time.perf_counter() - built,
          "steps_per_epoch": len(data.train), "parameters": vgg.parameter_count(model)})
    to_target(engine, data, recipe, plan["target"], plan["eval_every"], a.started, emit)
    emit({"event": "end", "peak_rss_mb": peak_rss_mb(), "env": backends.environment(a.worker)})  # off the clock


def _parity_child(a: argparse.Namespace) -> None:
    """The parity check's child: load each backend (one that fails is reported, not fatal), run
    :func:`common.tools.parity.run` on the rest, print one tagged JSON line."""
    from common.tools import loading

    plan: RaceSettings = json.loads(a.plan)
    modules: dict[str, Backend] = {}
    broken: dict[str, str] = {}
    for name in a.parity.split(","):
        try:
            modules[name] = loading.backend(name)
            modules[name].init_distributed(device=plan["device"])
        except Exception as exc:  # a missing or broken framework is that backend's reason, the others go on
            broken[name] = formats.first_line(exc)
    matrices: ParityMatrices = {}
    config = config_of(plan, 0)
    if modules:
        recipe = plan["recipe"]
        matrices = parity.run(modules, config, batch=PARITY_BATCH, steps=PARITY_STEPS, lr=recipe["lr"],
                              momentum=recipe["momentum"], weight_decay=recipe["weight_decay"],
                              label_smoothing=recipe["label_smoothing"])
    children.emit({"broken": broken, "bounds": parity.bounds_of(config, PARITY_BATCH),
                   "matrices": {q: [[a, b, d] for (a, b), d in cells.items()] for q, cells in matrices.items()}})


def disagreements(matrices: dict[str, list[ParityCell]], names: list[str],
                  bounds: dict[str, float]) -> dict[str, str]:
    """The backends of ``names`` the parity ``matrices`` (quantity -> [a, b, difference]) refuse against
    ``bounds`` (``parity.bounds_of`` the raced model), each with its worst failing cell: one off the oracle, or
    off more than half of the other backends (with two that disagree neither races: no majority says which is
    right)."""
    failing: dict[str, list[tuple[float, str, str, float]]] = {name: [] for name in names}
    for quantity, cells in matrices.items():
        for a, b, d in cells:
            if a in failing and d > bounds[quantity]:
                failing[a].append((d / bounds[quantity], quantity, b, d))
    refused = {}
    for name, fails in failing.items():
        others = {b for *_, b, _ in fails if b != parity.ORACLE}
        if len(others) > (len(names) - 1) / 2 or any(b == parity.ORACLE for *_, b, _ in fails):
            _, quantity, b, d = max(fails)
            refused[name] = (f"parity refused: its {quantity} differ from {b}'s by {d:.1e} "
                             f"(tolerance {bounds[quantity]:g})")
    return refused


def parity_check(plan: RaceSettings, names: list[str], log: Callable[[str], None]) -> RaceParity:
    """The parity check of the raced configuration on ``names``, in a child: its matrices, and the backends
    it refuses (disagreeing or broken) with their reasons."""
    log(f"vgg race: parity check of {', '.join(names)} (batch {PARITY_BATCH}, {PARITY_STEPS} SGD steps) ...")
    found: list[dict] = []
    error = children.run("common.tools.race", ["--parity", ",".join(names), "--plan", json.dumps(plan)],
                         found.append)
    if error or not found:
        return {"matrices": {}, "refused": dict.fromkeys(names, f"parity check failed: {error}")}
    result = found[-1]
    loaded = [n for n in names if n not in result["broken"]]
    refused = {n: f"cannot load: {e}" for n, e in result["broken"].items()}
    refused.update(disagreements(result["matrices"], loaded, result["bounds"]))
    return {"matrices": result["matrices"], "refused": refused, "bounds": result["bounds"]}


def run_one(plan: RaceSettings, backend: str, seed: int, log: Callable[[str], None]) -> RaceRun:
    """One backend and seed in its own child, from process start to the target (or ``max_epochs``): the run's
    record, with its error if it crashed."""
    run: RaceRun = {"backend": backend, "seed": seed, "evaluations": []}

    def on_record(record: dict) -> None:
        event = record.pop("event")
        if event == "evaluation":
            run["evaluations"].append(cast(Evaluation, record))  # the child's evaluation, as to_target emits it
            log(f"{backend:6} seed {seed}: epoch {record['epoch']:6.2f} ({record['steps']} steps) test acc "
                f"{record['test_acc']:.4f} at {record['wall_s']:7.1f} s (training {record['train_s']:.1f} s, "
                f"evaluation {record['eval_s']:.1f} s)")
        else:
            run.update(cast(RaceRun, record))  # its start or end: _worker's fields of a run

    started = time.time()
    error = children.run("common.tools.race", ["--worker", backend, "--seed", str(seed), "--plan", json.dumps(plan),
                                               "--started", repr(started)], on_record)
    if error:
        run["error"] = error
    race_report.settle(run, plan["target"])
    return run


def load_earlier(out: Path, plan: RaceSettings, resume: bool) -> RaceReport | None:
    """The race in ``out`` that ``--resume`` continues (None for a new race), after refusing an ``out`` that
    holds another race without --resume, one run with other settings, or files that are no race's."""
    if not out.is_dir():
        return None
    strange = sorted(p.name for p in out.iterdir()
                     if not any(fnmatch.fnmatchcase(p.name, f) for f in FILES) and not p.name.startswith(".probe-"))
    if strange:
        raise ValueError(f"--out {out} holds files that are not a race's ({', '.join(strange[:5])}); "
                         "choose another --out")
    if not (out / "race.json").exists():
        return None
    if not resume:
        raise ValueError(f"--out {out} already holds a race (race.json); pass --resume to continue it, or "
                         "choose another --out")
    earlier = json.loads((out / "race.json").read_text())
    # a race run before a recipe field existed ran with its default
    defaults = {f.name: f.default for f in fields(training.Recipe) if f.name in plan["recipe"]}
    was = {**earlier["settings"], "recipe": {**defaults, **earlier["settings"]["recipe"]}}
    differs = sorted(k for k in {*plan, *was} if k not in MAY_CHANGE and was.get(k) != plan.get(k))
    if differs:
        raise ValueError(f"--resume: the race in {out} was run with other settings ({', '.join(differs)}); "
                         "repeat its options, or choose another --out")
    here = machine()
    if (earlier["machine"]["cpu"], earlier["machine"]["cores"]) != (here["cpu"], here["cores"]):
        raise ValueError(f"--resume: the race in {out} ran on {earlier['machine']['cores']} cores of "
                         f"{earlier['machine']['cpu']}, this machine has {here['cores']} of {here['cpu']}: times "
                         "from two machines do not race each other; choose another --out")
    return earlier


def _contenders(plan: RaceSettings, log: Callable[[str], None]) -> dict[str, str]:
    """The backends that cannot run the race's precision here, with the reason; the others' notes logged.
    Refuses the race (PrecisionError) when none can."""
    refused = {}
    for name in plan["backends"]:
        try:
            note = capability.check(name, plan["precision"], plan["device"])
        except PrecisionError as exc:
            refused[name] = str(exc)
            continue
        if note:
            log(f"vgg race: note: {note}")
    if len(refused) == len(plan["backends"]):
        raise PrecisionError(f"--precision {plan['precision']}: no backend of {','.join(plan['backends'])} can run "
                             "it here (" + "; ".join(refused.values()) + ")")
    return refused


def order(plan: RaceSettings, raced: list[str]) -> Iterator[tuple[int, str]]:
    """(seed, backend) in race order: seed 0 of every backend, then seed 1, ...: drift spreads over all."""
    return ((seed, name) for seed in range(plan["seeds"]) for name in raced)


def run(plan: RaceSettings, out: Path, resume: bool = False, command: str = "",
        log: Callable[[str], None] = print) -> RaceReport:
    """The race ``plan`` describes into ``out`` (race.json, race.md, charts, rewritten after every run);
    with ``resume``, the race there continues and its finished runs are kept."""
    refused = _contenders(plan, log)
    # found, downloaded if need be, and verified before any clock runs (and a bad --data-dir refused here)
    fashion_mnist.load_arrays(plan["data_dir"], verify=plan["verify"])
    load_earlier(out, plan, resume)  # a refusal leaves --out untouched (not even a lock file)
    with run_folder.locked(out, f"--out {out}"):
        earlier = load_earlier(out, plan, resume)  # again, now that no other race can write there
        report: RaceReport = earlier or {"command": command, "settings": plan, "machine": cast(Machine, machine()),
                                         "runs": []}
        report.setdefault("provenance", provenance())  # the record's: a race from before records gets this sitting's
        report["settings"] = plan
        if "parity" not in report:
            names = [n for n in plan["backends"] if n not in refused]
            report["parity"] = parity_check(plan, names, log)
            report["parity"]["refused"] = {**refused, **report["parity"]["refused"]}
            race_report.write(report, out)
        for name, reason in report["parity"]["refused"].items():
            log(f"vgg race: {name} does not race: {reason}")
        raced = [n for n in plan["backends"] if n not in report["parity"]["refused"]]
        done = {(r["backend"], r["seed"]) for r in report["runs"] if r["status"] != "error"}
        for seed, name in order(plan, raced):
            if (name, seed) in done:
                continue
            log(f"vgg race: {name} seed {seed} starts")
            result = run_one(plan, name, seed, log)
            log(f"vgg race: {name} seed {seed}: {race_report.outcome(result)}")
            report["runs"] = [r for r in report["runs"] if (r["backend"], r["seed"]) != (name, seed)] + [result]
            race_report.write(report, out)
        write_record(report, out, log)
    return report


def provenance() -> Provenance:
    """What a race's record needs besides its report: this machine, environment and commit."""
    head, dirty = records.commit()
    return {"machine": records.machine(), "environment": records.environment(), "commit": [head, dirty]}


def write_record(report: RaceReport, out: Path, log: Callable[[str], None]) -> None:
    """The race's record into ``out`` (a resumed race adds one); a race without provenance to name (a checkout
    without git) is said so, and its report stands."""
    try:
        log(f"vgg race: wrote the record {records.write(race_report.record(report), out).name}")
    except records.RecordError as exc:
        log(f"vgg race: no record written: {exc}")


def _main() -> None:
    p = argparse.ArgumentParser(description="a vgg race child process (internal)")
    p.add_argument("--worker", help="race this backend")
    p.add_argument("--parity", metavar="BACKENDS", help="check these backends' parity")
    p.add_argument("--plan", required=True, help="the race's settings, as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--started", type=float, default=None,
                   help="the parent's time.time() just before it started this process (default: now)")
    a = p.parse_args()
    a.began = time.time()
    a.started = a.began if a.started is None else a.started
    _parity_child(a) if a.parity else _worker(a)
    sys.stdout.flush()
    os._exit(0)  # its records are out: skip the frameworks' teardown (seconds for TensorFlow), off the clock anyway


if __name__ == "__main__":
    _main()
