"""The ``vgg race`` report: each run settled from its evaluations, the statistics over seeds, the equivalence
test of epochs-to-target, and race.json, race.md and two charts, each written atomically."""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.core import atomic, precision
from common.tools import records
from common.tools.report_parts import environment_table, new_figure, save_png, title
from common.tools.report_types import BackendStats, Equivalence, RaceReport, RaceRun, RaceSummary, SeedSpread

#: the charts: test accuracy against wall-clock seconds, and time-to-target with its range
CHARTS = ("race_accuracy.png", "race_time.png")
#: MLPerf's rule: with this many runs or more, the fastest and the slowest are dropped and the rest averaged
OLYMPIC_RUNS = 5
#: a run's start-up, before its first step: the interpreter, the framework's import, the data, the model,
#: the training step's set-up (optimizer; torch's takes seconds)
STARTUP = ("interpreter_s", "import_s", "data_s", "build_s", "engine_s")
#: the equivalence margin, in units of the larger of the two backends' standard deviations over seeds
MARGIN_STDS = 2.0
#: the kind of record a race writes (docs/race.md's tables render from them)
KIND = "race"


def settle(run: RaceRun, target: float) -> RaceRun:
    """Fill in a run's outcome from its evaluations: finished (the first at or above ``target``, with its
    clock), did not finish (its best accuracy), or error (crashed before reaching the target)."""
    evals = run["evaluations"]
    hit = next((i for i, e in enumerate(evals) if e["test_acc"] >= target), None)
    run["status"] = "finished" if hit is not None else "error" if "error" in run else "did not finish"
    run["best_acc"] = max((e["test_acc"] for e in evals), default=None)
    run["final_acc"] = evals[-1]["test_acc"] if evals else None
    if hit is not None:
        first = evals[hit]
        run.update({"time_to_target_s": first["wall_s"], "train_to_target_s": first["train_s"],
                    "eval_to_target_s": sum(e["eval_s"] for e in evals[:hit + 1]), "epochs_to_target": first["epoch"],
                    "steps_to_target": first["steps"]})
    return run


def outcome(run: RaceRun) -> str:
    """A run's result in a few words."""
    if run["status"] == "finished":
        return (f"target at {run['time_to_target_s']:.1f} s (training {run['train_to_target_s']:.1f} s), "
                f"epoch {run['epochs_to_target']:.2f}")
    best = f"best test acc {run['best_acc']:.4f}" if run["best_acc"] is not None else "no evaluation"
    return f"did not finish ({best})" if run["status"] == "did not finish" else f"failed: {run['error']} ({best})"


def _spread(values: list[float]) -> SeedSpread:
    """Mean and sample standard deviation (None with fewer than two values)."""
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def _finite(value: float) -> float | None:
    """JSON's form of a time: None for a run (or a median of runs) that did not finish."""
    return value if math.isfinite(value) else None


def olympic_mean(times: list[float]) -> float | None:
    """MLPerf's time-to-train over ``times`` (a run that did not finish counts as infinitely slow): with
    OLYMPIC_RUNS or more, the mean without the fastest and the slowest; None with fewer runs."""
    if len(times) < OLYMPIC_RUNS:
        return None
    return statistics.fmean(sorted(times)[1:-1])


def _backend(runs: list[RaceRun]) -> BackendStats:
    """One backend's statistics over its seeds; errors are left out, a run that did not finish counts as
    infinitely slow in the median, range and MLPerf mean."""
    done = [r for r in runs if r["status"] != "error"]
    finished = [r for r in done if r["status"] == "finished"]
    times = [r.get("time_to_target_s", math.inf) for r in done]
    stats: BackendStats = {"runs": len(runs), "finished": len(finished), "did_not_finish": len(done) - len(finished),
                           "errors": len(runs) - len(done)}
    if not done:
        return stats
    olympic = olympic_mean(times)
    stats.update({
        "time_median_s": _finite(statistics.median(times)), "time_min_s": _finite(min(times)),
        "time_max_s": _finite(max(times)), "olympic_mean_s": None if olympic is None else _finite(olympic),
        "train_median_s": statistics.median(r["train_to_target_s"] for r in finished) if finished else None,
        "eval_median_s": statistics.median(r["eval_to_target_s"] for r in finished) if finished else None,
        "epochs_to_target": _spread([r["epochs_to_target"] for r in finished]),
        "steps_to_target": _spread([r["steps_to_target"] for r in finished]),
        "final_acc": _spread([acc for r in done if (acc := r["final_acc"]) is not None]),
        "best_acc": max((acc for r in done if (acc := r["best_acc"]) is not None), default=None)})
    return stats


def equivalence(by_backend: dict[str, BackendStats], eval_every: float) -> list[Equivalence]:
    """Every pair of backends with two finished seeds or more: equivalent when their mean epochs-to-target
    differ by at most MARGIN_STDS x the larger standard deviation, and never by less than one evaluation
    interval (epochs-to-target is measured on that grid, so a spread of 0 still means +-``eval_every``)."""
    tested: dict[str, tuple[float, float]] = {}  # backend -> mean and standard deviation
    for name, stats in by_backend.items():
        spread = stats.get("epochs_to_target")
        if spread and spread["mean"] is not None and spread["std"] is not None:  # two finished seeds or more
            tested[name] = spread["mean"], spread["std"]
    pairs: list[Equivalence] = []
    for (a, (mean_a, std_a)), (b, (mean_b, std_b)) in itertools.combinations(tested.items(), 2):
        margin = max(MARGIN_STDS * max(std_a, std_b), eval_every)
        difference = abs(mean_a - mean_b)
        pairs.append({"pair": [a, b], "difference": difference, "margin": margin, "equivalent": difference <= margin})
    return pairs


def summarise(report: RaceReport) -> RaceSummary:
    """Per backend: the statistics over seeds and the ratio of its median time to the fastest median; and
    the equivalence of every pair's epochs-to-target."""
    names = [n for n in report["settings"]["backends"] if any(r["backend"] == n for r in report["runs"])]
    by_backend = {n: _backend([r for r in report["runs"] if r["backend"] == n]) for n in names}
    medians = [m for s in by_backend.values() if (m := s.get("time_median_s")) is not None]
    for stats in by_backend.values():
        if medians and (median := stats.get("time_median_s")) is not None:
            stats["vs_fastest"] = median / min(medians)
    return {"backends": by_backend, "equivalence": equivalence(by_backend, report["settings"]["eval_every"])}


def _time(st: BackendStats) -> str:
    """The median and range of a backend's times to target; "dnf" for a run that did not finish."""
    if st["time_min_s"] is None:
        return "did not finish"
    median = "did not finish" if st["time_median_s"] is None else f"{st['time_median_s']:.1f}"
    high = "dnf" if st["time_max_s"] is None else f"{st['time_max_s']:.1f}"
    return f"{median} ({st['time_min_s']:.1f}-{high})"


def _mean_std(spread: SeedSpread, digits: int) -> str:
    if not spread or spread["mean"] is None:
        return "—"
    return f"{spread['mean']:.{digits}f}" + (f" ± {spread['std']:.{digits}f}" if spread["std"] is not None else "")


def _header(report: RaceReport) -> list[str]:
    s, m, r = report["settings"], report["machine"], report["settings"]["recipe"]
    warmup = f", warm-up {r['warmup_epochs']:g} epochs" if r["warmup_epochs"] else ""
    extras = [f"random crops padded by {r['crop_padding']}" if r.get("crop_padding") else "",
              "random horizontal flips" if r.get("flip") else "",
              f"label smoothing {r['label_smoothing']:g}" if r.get("label_smoothing") else "",
              "test-time flip averaging" if r.get("test_flip") else ""]
    warmup += "".join(f", {e}" for e in extras if e)
    data = f", first {s['limit']:,} training examples" if s["limit"] else ""
    return [f"# vgg race: {s['arch']} at {s['resize']}x{s['resize']} in {s['precision']} to test accuracy "
            f"{s['target']:g}", "", f"`{report['command']}`", "",
            f"{m['date']}; {m['cores']} cores ({m['cpu']}); every run its own process with every core "
            "(threads: " + "; ".join(f"{k}: {v}" for k, v in m["threads"].items()) + ")", "",
            f"Recipe: SGD lr {r['lr']:g}, batch {r['batch_size']}, momentum {r['momentum']:g}, weight decay "
            f"{r['weight_decay']:g}, {r['schedule']} schedule over {s['max_epochs']} epochs{warmup}{data}; "
            f"hidden layers {s['hidden']} wide. Test accuracy every {s['eval_every']:g} epoch; {s['seeds']} "
            "seed(s), run interleaved (seed 0 of every backend, then seed 1, ...).", "",
            "The clock: wall-clock seconds from the moment the race started the run's process (import, build, "
            "data, compilation, training and every evaluation) to the end of the first evaluation at or above "
            "the target. Training-only time is the training steps alone (with their batches).", ""]


def _parity(report: RaceReport) -> list[str]:
    s, p = report["settings"], report["parity"]
    worst: dict[tuple[str, str], float] = {}
    for quantity, cells in p["matrices"].items():
        for a, _, d in cells:
            worst[a, quantity] = max(worst.get((a, quantity), 0.0), d)
    quantities, bounds = list(p["matrices"]), p.get("bounds") or precision.bounds(s["precision"])
    lines = ["## Parity before the start", "",
             f"The raced model in {s['precision']} (dropout off), from one set of weights: logits against the "
             "NumPy oracle and every pair of backends, and a few SGD steps of the recipe's optimizer on a small "
             "batch (largest relative difference, the trajectory's trained weights as one relative L2 norm; "
             "`vgg parity`'s tolerances).", "",
             "| backend | " + " | ".join(f"{q} (tolerance {bounds[q]:g})" for q in quantities) + " | races |",
             "|---" * (len(quantities) + 2) + "|"]
    for name in s["backends"]:
        shown = [f"{worst[name, q]:.1e}" if (name, q) in worst else "—" for q in quantities]
        verdict = f"no: {p['refused'][name]}" if name in p["refused"] else "yes"
        lines.append(f"| {name} | " + " | ".join(shown) + f" | {verdict} |")
    return lines + [""]


def _summary_table(report: RaceReport, summary: RaceSummary) -> list[str]:
    s = report["settings"]
    lines = [f"## Time to {s['target']:g}", "",
             f"Over seeds: the median and range of the time-to-target (a run that did not finish counts as "
             f"infinitely slow), MLPerf's mean without the fastest and slowest run (with {OLYMPIC_RUNS} runs or "
             "more), the ratio of each median to the fastest; epochs-to-target and the final test accuracy (at "
             "the evaluation that stopped the run) as mean ± standard deviation.", "",
             "| backend | finished / runs | median s (range) | MLPerf mean s | vs fastest | training-only s (median) "
             "| evaluation s (median) | epochs to target | steps to target | final test acc |",
             "|---" * 10 + "|"]
    for name, st in summary["backends"].items():
        if "time_median_s" not in st:
            lines.append(f"| {name} | 0 / {st['runs']} | every run failed |" + " |" * 7)
            continue
        ratio = f"{st['vs_fastest']:.2f}x" if "vs_fastest" in st else "—"
        olympic = ("—" if st["finished"] + st["did_not_finish"] < OLYMPIC_RUNS else
                   "did not finish" if st["olympic_mean_s"] is None else f"{st['olympic_mean_s']:.1f}")
        train = "—" if st["train_median_s"] is None else f"{st['train_median_s']:.1f}"
        evals = "—" if st["eval_median_s"] is None else f"{st['eval_median_s']:.1f}"
        lines.append(f"| {name} | {st['finished']} / {st['runs']} | {_time(st)} | {olympic} | {ratio} | {train} | "
                     f"{evals} | {_mean_std(st['epochs_to_target'], 2)} | {_mean_std(st['steps_to_target'], 0)} | "
                     f"{_mean_std(st['final_acc'], 4)} |")
    done = {(r["backend"], r["seed"]) for r in report["runs"] if r["status"] != "error"}
    raced = [n for n in s["backends"] if n not in report.get("parity", {}).get("refused", {})]
    pending = [f"{n} seed {k}" for k in range(s["seeds"]) for n in raced if (n, k) not in done]
    if pending:  # a race stopped early (Ctrl-C) or still running: what --resume would run
        lines += ["", f"Not run yet ({len(pending)} of {s['seeds'] * len(raced)}; `--resume` runs them): "
                  + ", ".join(pending) + "."]
    return lines + [""]


def _equivalence(report: RaceReport, summary: RaceSummary) -> list[str]:
    every = report["settings"]["eval_every"]
    pairs = summary["equivalence"]
    lines = ["## Do the frameworks need the same epochs?", "",
             "They compute the same function (the parity check above), so their epochs-to-target should agree "
             "within the spread over seeds. The test: two backends are equivalent when their mean "
             f"epochs-to-target differ by at most {MARGIN_STDS:g} x the larger of their standard deviations over "
             f"seeds, and never by less than one evaluation interval ({every:g} epoch: the grid it is measured "
             "on). A margin rule, not a significance test; it needs two finished seeds per backend.", ""]
    if not pairs:
        return lines + ["Not tested: no two backends have two finished seeds each.", ""]
    lines += ["| pair | difference of means (epochs) | margin | conclusion |", "|---|---|---|---|"]
    lines += [f"| {a} - {b} | {p['difference']:.2f} | {p['margin']:.2f} | "
              f"{'equivalent' if p['equivalent'] else 'differ'} |" for p in pairs for a, b in [p["pair"]]]
    differ = [" - ".join(p["pair"]) for p in pairs if not p["equivalent"]]
    verdict = ("Conclusion: every pair tested is equivalent." if not differ else
               f"Conclusion: {', '.join(differ)} differ by more than the margin.")
    return lines + ["", verdict, ""]


def _run_row(r: RaceRun) -> str:
    """One run as a row of the runs table."""
    finished = r["status"] == "finished"
    status = r["status"] if r["status"] != "error" else f"failed: {r['error']}"
    clock = ([f"{r['time_to_target_s']:.1f}", f"{r['train_to_target_s']:.1f}", f"{r['eval_to_target_s']:.1f}"]
             if finished else ["—"] * 3)
    fields: Mapping[str, Any] = r  # read by the names of STARTUP
    start = ", ".join(f"{fields[k]:.1f}" for k in STARTUP if k in fields) or "—"
    reached = [f"{r['epochs_to_target']:.2f}", str(r["steps_to_target"])] if finished else ["—", "—"]
    accs = [f"{acc:.4f}" if acc is not None else "—" for acc in (r["final_acc"], r["best_acc"])]
    return "| " + " | ".join([str(r["seed"]), r["backend"], status, *clock, start, *reached, *accs]) + " |"


def _runs_table(report: RaceReport) -> list[str]:
    order = report["settings"]["backends"]
    runs = sorted(report["runs"], key=lambda r: (r["seed"], order.index(r["backend"])))
    return ["## Runs", "", "| seed | backend | outcome | time to target s | training s | evaluation s | "
            "start-up s (interpreter, import, data, build, engine) | epochs | steps | final test acc | best test acc |",
            "|---" * 11 + "|", *map(_run_row, runs), ""]


def _accuracy_chart(report: RaceReport) -> Any:
    names = report["settings"]["backends"]
    fig = new_figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for r in report["runs"]:
        if r["evaluations"]:
            ax.plot([e["wall_s"] for e in r["evaluations"]], [e["test_acc"] for e in r["evaluations"]],
                    color=f"C{names.index(r['backend'])}", linestyle=("-", "--", ":", "-.")[r["seed"] % 4],
                    marker="o", markersize=3, label=f"{r['backend']} seed {r['seed']}")
    ax.axhline(report["settings"]["target"], color="grey", linestyle="--", linewidth=1, label="target")
    ax.set(xlabel="wall-clock seconds from process start", ylabel="test accuracy",
           title=title(report["machine"], "Test accuracy against wall-clock time, every backend and seed"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def _time_chart(report: RaceReport, summary: RaceSummary) -> Any:
    names = [n for n, s in summary["backends"].items() if s.get("finished")]
    fig = new_figure(figsize=(7, 1.6 + 0.7 * max(1, len(names))))
    ax = fig.subplots()
    for i, name in enumerate(names):
        st = summary["backends"][name]
        colour = f"C{report['settings']['backends'].index(name)}"
        times = [r["time_to_target_s"] for r in report["runs"] if r["backend"] == name and r["status"] == "finished"]
        first = i == 0
        if st["time_median_s"] is not None:
            ax.barh(i, st["time_median_s"], color=colour, alpha=0.45, label="median (wall-clock)" if first else None)
        ax.barh(i, st["train_median_s"], height=0.3, color=colour, label="training only (median)" if first else None)
        ax.hlines(i, min(times), max(times), color="black", label="range over seeds" if first else None)
        ax.plot(times, [i] * len(times), "k|", markersize=12)
        if st["did_not_finish"]:  # said beside the range, not drawn
            ax.annotate(f"  +{st['did_not_finish']} did not finish", (max(times), i), fontsize=7, va="center")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()  # the backends top to bottom in the order raced
    ax.set(xlabel=f"seconds to test accuracy {report['settings']['target']:g}",
           title=title(report["machine"], "Time to target: median, range and every seed"))
    ax.set_xlim(0, 1.3 * ax.get_xlim()[1])  # room for "did not finish" beside the longest range
    ax.grid(axis="x", alpha=0.3)
    if names:  # before any run finished, an empty chart with its title (and no empty legend)
        fig.legend(fontsize=7, loc="lower center", ncol=3)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1))  # the legend's strip below the axes
    return fig


def write(report: RaceReport, out: Path) -> None:
    """race.json (with the summary), race.md and the two charts, each written atomically."""
    report["summary"] = summary = summarise(report)
    atomic.write_text(out / "race.json", json.dumps(report, indent=1))
    md = [*_header(report), *_parity(report)]
    if report["runs"]:
        md += [*_summary_table(report, summary), *_equivalence(report, summary),
               f"![test accuracy against wall-clock seconds]({CHARTS[0]})", "",
               f"![time to target]({CHARTS[1]})", "", *_runs_table(report),
               "## Environments", "", *environment_table(report["runs"]), ""]
    atomic.write_text(out / "race.md", "\n".join(md))
    if report["runs"]:
        save_png(_accuracy_chart(report), out / CHARTS[0])
        save_png(_time_chart(report, summary), out / CHARTS[1])


def _environment(report: RaceReport) -> dict:
    """The race's environment: the one it recorded, else its runs' (Python, NumPy, each framework; the
    environment's name from the interpreter's folder), None where nothing says."""
    if "provenance" in report:
        return report["provenance"]["environment"]
    env: dict = {"name": None, "python": None}
    for run in report["runs"]:
        for key, value in run.get("env", {}).items():
            if key == "executable":
                env["name"] = env["name"] or {".venv": "all", ".venv-modern": "modern"}.get(Path(value).parents[1].name)
            elif env.get(key) is None:
                env[key] = value
    return env


def _worst(report: RaceReport, backend: str) -> dict[str, float]:
    """The parity check's largest difference of ``backend`` per quantity, against the oracle or any backend."""
    worst: dict[str, float] = {}
    for quantity, cells in report.get("parity", {}).get("matrices", {}).items():
        for a, _, d in cells:
            if a == backend:
                worst[quantity] = max(worst.get(quantity, 0.0), d)
    return worst


def _backend_results(report: RaceReport, name: str, stats: BackendStats | None, cell: dict[str, Any]) -> list[dict]:
    """One backend's figures over seeds: runs and finished, median time to target (samples: the finished
    runs'), MLPerf's mean where there are enough runs, training-only and evaluation medians, epochs and steps
    to target and the final test accuracy (mean, samples per run), the parity check's worst differences."""
    result = records.result
    refused = report.get("parity", {}).get("refused", {})
    found = [result("raced", "bool", int(name not in refused), **cell),
             *(result("parity_max_rel_diff", "rel", d, quantity=q, **cell) for q, d in _worst(report, name).items())]
    if not stats or "time_median_s" not in stats:
        return found
    done = sorted((r for r in report["runs"] if r["backend"] == name and r["status"] != "error"),
                  key=lambda r: r["seed"])
    finished = [r for r in done if r["status"] == "finished"]
    figures: list[tuple[str, str, float | None, list[float] | None]] = [  # metric, unit, value, samples
        ("runs", "runs", stats["runs"], None), ("finished", "runs", stats["finished"], None),
        ("time_to_target_s", "s", stats["time_median_s"], [r["time_to_target_s"] for r in finished]),
        ("mlperf_mean_s", "s", stats["olympic_mean_s"], None),
        ("train_to_target_s", "s", stats["train_median_s"], [r["train_to_target_s"] for r in finished]),
        ("eval_to_target_s", "s", stats["eval_median_s"], [r["eval_to_target_s"] for r in finished]),
        ("epochs_to_target", "epochs", stats["epochs_to_target"]["mean"], [r["epochs_to_target"] for r in finished]),
        ("steps_to_target", "steps", stats["steps_to_target"]["mean"], [r["steps_to_target"] for r in finished])]
    found += [result(metric, unit, value, samples=samples, **cell)
              for metric, unit, value, samples in figures if value is not None or metric == "time_to_target_s"]
    accs = [r["final_acc"] for r in done if r["final_acc"] is not None]
    if accs:
        found.append(result("test_acc", "fraction", stats["final_acc"]["mean"], samples=accs, **cell))
    return found


def record(report: RaceReport, report_path: str | os.PathLike | None = None) -> dict:
    """The race as a record (kind ``race``): per backend the figures over seeds (:func:`_backend_results`),
    with the provenance the race recorded; a report from before races recorded theirs gets its machine from
    the CPU text it states, its environment from its runs and, given its ``report_path``, the commit that
    last wrote that file (``source`` says so)."""
    s, m = report["settings"], report["machine"]
    summary = report.get("summary") or summarise(report)
    cell = {"arch": s["arch"], "size": s["resize"], "precision": s["precision"]}
    results = [r for name in s["backends"]
               for r in _backend_results(report, name, summary["backends"].get(name), {"backend": name, **cell})]
    shown = None
    if report_path is not None:
        path = Path(report_path).resolve()
        shown = os.path.relpath(path, records.ROOT) if path.is_relative_to(records.ROOT) else str(report_path)
    provenance = report.get("provenance")
    if provenance:
        machine_info, commit_info, source = provenance["machine"], tuple(provenance["commit"]), None
    else:
        machine_info = records.machine_from_text(m["cpu"], m["cores"])
        commit_info = (records.file_commit(report_path) if report_path else None, None)
        source = {"file": shown, "commit_note": "the commit that last wrote this file; the race did not record "
                  "its own"} if shown else None
    details = {"settings": {k: v for k, v in s.items() if k != "data_dir"},
               "refused": report.get("parity", {}).get("refused", {}), "equivalence": summary["equivalence"]}
    name = f"{s['arch']}-{s['resize']}" + (f"-{s['precision']}" if s["precision"] != "fp32" else "")
    return records.make(KIND, results, command=report["command"], name=name, date=m["date"],
                        machine_info=machine_info, environment_info=_environment(report), commit_info=commit_info,
                        report=shown, details=details, source=source)
