"""The ``vgg compare`` report: compare.json (every round's runs and the rows summarised from them), compare.md
(tables of every row with medians, ranges and ties, the step split, serving latency, the data-parallel
scaling, the environments) and PNG charts, each rewritten atomically after every run; and the run's record
(``record``), built the same way from this version's compare.json and from the older ones committed."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.core import arch, atomic
from common.tools import records
from common.tools.measure import SERVED, WARMUP_REQUESTS
from common.tools.report_parts import environment_table, new_figure, save_png, title
from common.tools.report_types import Ceiling, CeilingRun, CeilingSpread, CompareReport, CompareRow, MeasuredRow
from common.tools.spreads import cell as cell_of, figure, is_number, spread, text, versus_fastest


def _merged(runs: dict[str, CeilingRun]) -> Ceiling:
    """One ceiling from its measurements (before the rows, and after them once done): the fastest product
    per engine, and the spread of the fastest engine's products."""
    engines = dict.fromkeys(e for run in runs.values() for e in run["by_engine"])
    by_engine = {e: max(run["by_engine"].get(e, 0) for run in runs.values()) for e in engines}
    best = max(by_engine, key=lambda e: by_engine[e])
    values = [v for run in runs.values() for v in run["samples"].get(best, [])]
    spread: CeilingSpread = {"engine": best, "low": min(values), "high": max(values), "products": len(values)}
    if "before" in runs:
        spread["before"] = runs["before"]["by_engine"].get(best)
    if "after" in runs:
        spread["after"] = runs["after"]["by_engine"].get(best)
    return {"gflop_s": by_engine[best], "by_engine": by_engine, "spread": spread}


def merge_ceilings(report: CompareReport) -> None:
    """The report's ceilings from every measurement so far: float32's (``matmul_*``) and, in ``ceilings``,
    each other precision's that has products of its own here."""
    fp32 = _merged(report["matmul_runs"])
    report["matmul_gflop_s"], report["matmul_by_engine"], report["matmul_spread"] = (
        fp32["gflop_s"], fp32["by_engine"], fp32["spread"])
    report["ceilings"] = {p: _merged(runs) for p, runs in report.get("ceiling_runs", {}).items()}


def ceiling_of(report: CompareReport, precision: str) -> float:
    """The product ceiling a row in ``precision`` is held against: its precision's where it was measured,
    else float32's (a precision this machine only emulates has no faster ceiling)."""
    own = report.get("ceilings", {}).get(precision)
    return own["gflop_s"] if own else report["matmul_gflop_s"]


def ceilings_text(report: CompareReport) -> str:
    """One sentence per precision of the rows that is not fp32: its own ceiling, or why its rows use float32's."""
    lines = [f"{p} matmul ceiling {c['gflop_s']:.0f} GFLOP/s ({engines(c['by_engine'])}; "
             f"{_ceiling_spread(c['spread'])})" for p, c in report.get("ceilings", {}).items()]
    lines += [f"{p}: no ceiling of its own ({why}), so its rows' % is of the float32 ceiling"
              for p, why in report.get("ceilings_skipped", {}).items()]
    return "; ".join(lines)


def speedup(row: MeasuredRow, rows: Sequence[CompareRow]) -> float | None:
    """A row's training throughput over its backend's fp32 row at the same size and worker count."""
    key = (row["backend"], row["size"], row.get("workers", 1))
    base = next((r for r in rows if "error" not in r and r.get("precision", "fp32") == "fp32"
                 and (r["backend"], r["size"], r.get("workers", 1)) == key), None)
    return row["train_ex_s"] / base["train_ex_s"] if base else None


def _ceiling_share(row: MeasuredRow, report: CompareReport) -> str:
    return text(row, "train_gflop_s", ".0f", 100 / ceiling_of(report, row.get("precision", "fp32"))) + " %"


def _table(report: CompareReport) -> str:
    """The Markdown table of a report: a row per backend, size, precision and worker count, every figure its
    median over the rounds with the range in brackets."""
    trained = report["train_epochs"]
    rows = report["rows"]
    lines = ["| backend | size | precision | workers x threads | train ex/s | train vs fastest | vs fp32 | "
             "infer ex/s | infer vs fastest | GFLOP/s (train) | % of matmul ceiling | "
             "logits vs float64 oracle | build s | first step s | peak RSS MB |"
             + (" test acc (round 1) |" if trained else ""),
             "|---" * (16 if trained else 15) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['size']} | {r.get('precision', 'fp32')} | {r.get('workers', 1)} | "
                         f"failed: {r['error']} |" + " |" * 10 + (" |" if trained else ""))
            continue
        gain = speedup(r, rows)
        lines.append(f"| {r['backend']} | {r['size']} | {r.get('precision', 'fp32')} | "
                     f"{r.get('workers', 1)} x {r.get('threads')} | {text(r, 'train_ex_s')} | "
                     f"{versus_fastest(r, rows, 'train_ex_s')} | {f'{gain:.2f}x' if gain else '—'} | "
                     f"{text(r, 'infer_ex_s')} | {versus_fastest(r, rows, 'infer_ex_s')} | "
                     f"{text(r, 'train_gflop_s')} | {_ceiling_share(r, report)} | {text(r, 'parity_error', '.1e')} | "
                     f"{text(r, 'build_s', '.2f')} | {text(r, 'first_step_s', '.2f')} | "
                     f"{text(r, 'peak_rss_mb', '.0f')} |"
                     + (f" {r['test_acc']:.3f} |" if trained and "test_acc" in r else " — |" if trained else ""))
    return "\n".join(lines)


def _split_table(report: CompareReport) -> str:
    """Forward and backward-plus-update time per training step, one process."""
    rows = [r for r in report["rows"] if "forward_ms" in r]
    if not rows:
        return ""
    lines = ["The step split (one process): forward-only and full training steps alternate on the same batches, "
             "each timed to completion with the framework's own synchronisation; backward + update is the full "
             "step's median less the forward's.", "",
             "| backend | size | precision | forward ms | backward + update ms | full step ms | forward share |",
             "|---" * 7 + "|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['size']} | {r.get('precision', 'fp32')} | {text(r, 'forward_ms')} | "
                     f"{text(r, 'backward_update_ms')} | {text(r, 'step_ms')} | "
                     f"{100 * r['forward_ms'] / r['step_ms']:.0f} % |")
    return "\n".join(lines)


#: how the latency table names each server
SERVERS = dict(zip(SERVED, ("live model (predict)", "native export (load_exported)", "ONNX (ONNX Runtime)")))


def _latency_table(report: CompareReport) -> str:
    """Batch-1 latency percentiles of every row's live model and exports."""
    rows = [r for r in report["rows"] if "latency" in r]
    if not rows:
        return ""
    lines = [f"Serving latency: {report['latency_requests']} batch-1 requests per server after "
             f"{WARMUP_REQUESTS} untimed ones, each waiting for its logits as NumPy; percentiles in ms, median over "
             "the rounds with the range in brackets. Batch throughput is the table above's infer ex/s.", "",
             "| backend | size | precision | served by | p50 ms | p90 ms | p99 ms | export s |", "|---" * 8 + "|"]
    for r in rows:
        for served, label in SERVERS.items():
            entry: Mapping[str, Any] = r["latency"].get(served, {})
            head = f"| {r['backend']} | {r['size']} | {r.get('precision', 'fp32')} | {label} |"
            if "p50_ms" not in entry:
                lines.append(f"{head} {entry.get('error', 'not measured')} | | | |")
                continue
            cells = [text(r, f"latency.{served}.{p}", ".2f") for p in ("p50_ms", "p90_ms", "p99_ms")]
            lines.append(f"{head} {' | '.join(cells)} | {text(r, f'latency.{served}.export_s', '.1f')} |")
    return "\n".join(lines)


def scaling(rows: Sequence[CompareRow]) -> list[dict[str, Any]]:
    """For every row with W > 1 workers: its throughput against the one-process row of the same backend
    and size (both use all cores), and the scaling efficiency T_W / (W x T_1)."""
    single = {(r["backend"], r["size"], r.get("precision")): r for r in rows
              if "error" not in r and r.get("workers", 1) == 1}
    out = []
    for r in rows:
        one = single.get((r["backend"], r["size"], r.get("precision")))
        if "error" in r or r.get("workers", 1) == 1 or one is None:
            continue
        relative = r["train_ex_s"] / one["train_ex_s"]
        out.append({"backend": r["backend"], "size": r["size"], "workers": r["workers"], "engine": r["engine"],
                    "relative": relative, "efficiency": relative / r["workers"], "comm_ms": r.get("comm_ms"),
                    "step_ms": 1000 * r["batch_size"] / r["train_ex_s"]})
    return out


def _scaling_table(report: CompareReport) -> str:
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


def _title(report: CompareReport, what: str) -> str:
    """A chart's title: what it shows over how many rounds, on which machine, when."""
    return title(report["machine"], f"{what}: median and range of {report.get('rounds', 1)} round(s)")


#: the legend of the stacked step-split chart
STACKED = {"forward_ms": "forward", "backward_update_ms": "backward + update"}


def _bars(ax: Any, x: list[float], found: list[tuple[float, float, float]], colors: list[str],
          **options: Any) -> None:
    """Bars at ``x`` and the medians of ``found`` (median, lowest, highest) with error bars over the rounds."""
    ax.bar(x, [f[0] for f in found], yerr=[[f[0] - f[1] for f in found], [f[2] - f[0] for f in found]],
           capsize=3, color=colors, **options)


def _layout(rows: list[MeasuredRow], names: list[str], precisions: list[str]) -> tuple[list[float], float]:
    """Each row's x: one group per backend, one bar per precision inside it (side by side), and the width."""
    width = 0.8 / len(precisions)
    return [names.index(r["backend"]) + (precisions.index(r.get("precision", "fp32")) - (len(precisions) - 1) / 2)
            * width for r in rows], width


def _spreads(row: MeasuredRow, keys: tuple[str, ...]) -> list[tuple[float, float, float]] | None:
    """The spread of every figure of ``keys`` in ``row``, or None where it lacks one."""
    found = [s for k in keys if (s := spread(row, k)) is not None]
    return found if len(found) == len(keys) else None


def _charts(report: CompareReport, out: Path) -> list[Path]:
    """A PNG per figure: a panel per size, a bar per backend (and precision) at its median with its range;
    the GFLOP/s chart draws the machine's ceiling, the split stacks forward and backward + update."""
    rows = [r for r in report["rows"] if "error" not in r and r.get("workers", 1) == 1]
    paths: list[Path] = []
    if not rows:
        return paths
    names = list(dict.fromkeys(r["backend"] for r in rows))
    precisions = list(dict.fromkeys(r.get("precision", "fp32") for r in rows))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    several = len(precisions) > 1

    def bar(r: MeasuredRow) -> str:  # a bar per backend, and per precision where the report has several
        return f"{r['backend']}\n{r.get('precision', 'fp32')}" if several else r["backend"]

    def color(r: MeasuredRow) -> str:  # the precision's colour where there are several, else the backend's
        return f"C{precisions.index(r.get('precision', 'fp32'))}" if several else f"C{names.index(r['backend'])}"

    def ceiling_color(p: str) -> str:  # a ceiling in its precision's colour where bars have that colour
        return f"C{precisions.index(p)}" if several and p in precisions else "k"

    def chart(stem: str, what: str, keys: tuple[str, ...], label: str) -> None:
        fig = new_figure(figsize=(max(5.5, 3.2 * len(sizes)), 3.6), layout="constrained")
        axes = fig.subplots(1, len(sizes), squeeze=False)
        for ax, size in zip(axes[0], sizes):
            shown = [(r, found) for r in rows if r["size"] == size and (found := _spreads(r, keys))]
            here = [n for n in names if any(r["backend"] == n for r, _ in shown)]
            x, width = _layout([r for r, _ in shown], here, precisions)
            bottom = [0.0] * len(shown)
            for i, key in enumerate(keys):  # one key: plain bars; two: stacked, the second hatched
                figures = [found[i] for _, found in shown]
                _bars(ax, x, figures, [color(r) for r, _ in shown], width=width, bottom=bottom,
                      hatch="//" if i else None, label=f"_{key}" if several else STACKED.get(key, f"_{key}"))
                bottom = [b + f[0] for b, f in zip(bottom, figures)]
                if several and key in STACKED:  # a grey legend entry per part: the colours are the precisions'
                    ax.bar([0], [0], width=0, color="0.7", hatch="//" if i else None, label=STACKED[key])
            if several:  # one legend entry per precision, in its colour ("_...": no legend entry)
                for p in precisions:
                    ax.bar([0], [0], width=0, color=f"C{precisions.index(p)}", label=p)
            if stem == "train_gflops":
                ax.axhline(report["matmul_gflop_s"], color=ceiling_color("fp32"), linestyle="--",
                           label=f"float32 matmul ceiling {report['matmul_gflop_s']:.0f} GFLOP/s")
                for i, (p, c) in enumerate(report.get("ceilings", {}).items()):
                    ax.axhline(c["gflop_s"], color=ceiling_color(p),
                               linestyle=(0, (1, 1 + i)), label=f"{p} matmul ceiling {c['gflop_s']:.0f} GFLOP/s")
            ax.set_xticks(range(len(here)), here)
            if several or stem in ("train_gflops", "step_split"):
                ax.legend(fontsize=7)
            ax.set_title(f"{size}x{size}", fontsize=9)
            ax.set_ylabel(label)
        fig.suptitle(_title(report, what), fontsize=8)
        paths.append(save_png(fig, out / f"{stem}.png"))

    chart("train_throughput", "training examples/s", ("train_ex_s",), "training examples/s")
    chart("infer_throughput", "inference examples/s", ("infer_ex_s",), "inference examples/s")
    chart("train_gflops", "training GFLOP/s against the machine's ceiling", ("train_gflop_s",), "GFLOP/s")
    chart("memory", "peak RSS", ("peak_rss_mb",), "peak RSS (MB)")
    chart("step_split", "ms per training step: forward, then backward + update hatched",
          ("forward_ms", "backward_update_ms"), "ms per step")
    if any("latency" in r for r in rows):
        paths.append(_latency_chart(report, rows, sizes, bar, out))
    curves = [r for r in rows if "history" in r]
    if curves:
        fig = new_figure(figsize=(8, 3))
        left, right = fig.subplots(1, 2)
        for r in curves:
            epochs = [h["epoch"] for h in r["history"]]
            left.plot(epochs, [h["train_loss"] for h in r["history"]], label=f"{r['backend']} @{r['size']}")
            right.plot(epochs, [h["test_acc"] for h in r["history"]], label=f"{r['backend']} @{r['size']}")
        left.set(xlabel="epoch", ylabel="train loss")
        right.set(xlabel="epoch", ylabel="test accuracy")
        right.legend()
        fig.tight_layout()
        paths.append(save_png(fig, out / "curves.png"))
    return paths


def _latency_chart(report: CompareReport, rows: list[MeasuredRow], sizes: list[int],
                   bar: Callable[[MeasuredRow], str], out: Path) -> Path:
    """Median p50 latency per backend and server (log scale), with its range over the rounds."""
    fig = new_figure(figsize=(max(5.5, 3.6 * len(sizes)), 3.6), layout="constrained")
    axes = fig.subplots(1, len(sizes), squeeze=False)
    width = 0.8 / len(SERVERS)
    for ax, size in zip(axes[0], sizes):
        shown = [r for r in rows if r["size"] == size and "latency" in r]
        for i, served in enumerate(SERVERS):
            found = [(x, f) for x, r in enumerate(shown) if (f := spread(r, f"latency.{served}.p50_ms"))]
            if found:
                ax.bar([x + (i - 1) * width for x, _ in found], [f[0] for _, f in found], width,
                       yerr=[[f[0] - f[1] for _, f in found], [f[2] - f[0] for _, f in found]], capsize=2,
                       label=served)
        ax.set_xticks(range(len(shown)), [bar(r) for r in shown])
        ax.set_yscale("log")
        ax.set_title(f"{size}x{size}", fontsize=9)
        ax.set_ylabel("p50 ms per batch-1 request")
        ax.legend(fontsize=7)
    fig.suptitle(_title(report, "batch-1 latency p50 (live model, native export, ONNX Runtime)"), fontsize=8)
    return save_png(fig, out / "latency.png")


def engines(by_engine: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in by_engine.items())


def _ceiling_spread(ceiling: CeilingSpread) -> str:
    """How steady the ceiling was: the fastest engine before and after the rows, and all its products."""
    when = ", ".join(f"{k} {ceiling[k]:.0f}" for k in ("before", "after") if ceiling.get(k))
    return (f"{ceiling['engine']} measured {when}; its {ceiling['products']} products ran at "
            f"{ceiling['low']:.0f}-{ceiling['high']:.0f} GFLOP/s")


def _kernels(report: CompareReport) -> str:
    """A line naming the kernels each backend's rows ran on (``kernels`` in the rows), or "" for an older
    report that did not record them."""
    found = dict.fromkeys(f"{r['backend']}: {r['kernels']}" for r in report["rows"]
                          if "error" not in r and r.get("kernels"))
    return ("Kernels: " + "; ".join(found) + "\n") if found else ""


def _rounds(report: CompareReport) -> str:
    """How the figures were taken: the rounds, the ties, the one training run, any failed rounds."""
    rounds = report.get("rounds", 1)
    lines = [f"{rounds} interleaved round(s): each runs every backend x size x precision x workers cell once, in a "
             "fresh process, so drift on a shared machine spreads over all of them. Every figure is the median of "
             "the rounds that measured it, with its range (lowest-highest) in brackets where the rounds differ; "
             "\"vs fastest\" names every backend at the same size, precision and worker count whose range overlaps "
             "(a tie: the difference is within the rounds' spread)."]
    if report["train_epochs"]:
        lines.append(f"--train-epochs {report['train_epochs']}: trained once per backend and size, in round 1.")
    lines += [f"{r['backend']} at {r['size']} ({r.get('precision', 'fp32')}, {r.get('workers', 1)} worker(s)) "
              f"failed in round {k}: {error}" for r in report["rows"] if "error" not in r
              for k, error in r.get("failed_rounds", {}).items()]
    return "\n\n".join(lines)


def console_table(report: CompareReport) -> str:
    """The console's summary once every round is in: each figure's median (range) per row, and the latency
    percentiles per server where they were measured."""
    lines = [f"median (range) over {report.get('rounds', 1)} round(s):",
             f"{'backend':8} {'size':>5} {'prec':>5} {'W':>3} {'train ex/s':>22} {'infer ex/s':>22} {'GFLOP/s':>18} "
             f"{'%ceil':>12} {'build s':>16} {'1st step s':>16} {'RSS MB':>16} {'fwd ms':>18} {'bwd+upd ms':>18}"]
    for r in report["rows"]:
        head = f"{r['backend']:8} {r['size']:>5} {r.get('precision', 'fp32'):>5} {r.get('workers', 1):>3}"
        if "error" in r:
            lines.append(f"{head} failed: {r['error']}")
            continue
        lines.append(f"{head} {text(r, 'train_ex_s'):>22} {text(r, 'infer_ex_s'):>22} {text(r, 'train_gflop_s'):>18} "
                     f"{_ceiling_share(r, report).replace(' %', '%'):>12} {text(r, 'build_s', '.2f'):>16} "
                     f"{text(r, 'first_step_s', '.2f'):>16} {text(r, 'peak_rss_mb', '.0f'):>16} "
                     f"{text(r, 'forward_ms'):>18} {text(r, 'backward_update_ms'):>18}")
    served = [(r, s) for r in report["rows"] if "latency" in r for s in SERVERS]
    if served:
        lines += ["", f"batch-1 latency over {report['latency_requests']} requests, ms, median (range) over the "
                      "rounds:",
                  f"{'backend':8} {'size':>5} {'prec':>5} {'served by':>9} {'p50':>20} {'p90':>20} {'p99':>20}"]
        for r, s in served:
            entry: Mapping[str, Any] = r["latency"].get(s, {})
            figures = (" ".join(f"{text(r, f'latency.{s}.{p}', '.2f'):>20}" for p in ("p50_ms", "p90_ms", "p99_ms"))
                       if "p50_ms" in entry else entry.get("error", "not measured"))
            lines.append(f"{r['backend']:8} {r['size']:>5} {r.get('precision', 'fp32'):>5} {s:>9} {figures}")
    return "\n".join(lines)


def write_report(report: CompareReport, out: Path) -> None:
    """compare.json, compare.md and the PNG charts, each written atomically."""
    atomic.write_text(out / "compare.json", json.dumps(report, indent=1))
    m = report["machine"]
    size = report["matmul_runs"]["before"]["size"]
    head = "" if report["hidden"] == arch.HIDDEN else f", hidden layers {report['hidden']} wide"
    md = [f"# vgg compare: {report['arch']}{head}, batch {report['batch_size']}", "",
          f"`{report['command']}`", "",
          f"{m['date']}; {m['cores']} cores ({m['cpu']}); float32 matmul ceiling "
          f"{report['matmul_gflop_s']:.0f} GFLOP/s (the fastest {size}x{size} product: "
          f"{engines(report['matmul_by_engine'])}; {_ceiling_spread(report['matmul_spread'])})"
          + (f"; {ceilings_text(report)}" if ceilings_text(report) else ""), "",
          *([f"On the GPU: {', '.join(sorted({r['device'] for r in report['rows'] if 'device' in r}))}; every "
             "timed step ends by reading its loss on the host, which waits for the device.", ""]
            if report.get("device") == "gpu" else []),
          *environment_table(report["rows"]), "",
          "Threads: " + "; ".join(f"{k}: {v}" for k, v in m["threads"].items()), "",
          *([kernels] if (kernels := _kernels(report)) else []), _rounds(report), "",
          _table(report), "", _split_table(report), "", _latency_table(report), "", _scaling_table(report), ""]
    atomic.write_text(out / "compare.md", "\n".join(md))
    _charts(report, out)


# -- the run as a record ------------------------------------------------------------------------------------

#: a row's figures that its record keeps, by name (the record's metric) with their units
UNITS = {"train_ex_s": "ex/s", "infer_ex_s": "ex/s", "train_gflop_s": "GFLOP/s", "first_step_s": "s",
         "build_s": "s", "import_s": "s", "peak_rss_mb": "MB", "forward_ms": "ms", "backward_update_ms": "ms",
         "step_ms": "ms", "parity_error": "relative", "comm_ms": "ms", "test_acc": "fraction"}
#: the figures of each server (live, native, onnx) under a row's ``latency``, with their units
LATENCY_UNITS = {"p50_ms": "ms", "p90_ms": "ms", "p99_ms": "ms", "export_s": "s"}
#: what a record converted from an older report says of its commit
COMMIT_NOTE = "the commit that wrote this file; the run did not record its own"


def _spread(report: CompareReport, row: MeasuredRow, path: tuple[str, ...]) -> dict[str, Any]:
    """A figure's spread as ``records.result`` takes it: every successful round's value where the report keeps
    its runs (so n is the rounds), else the row's range, else nothing (an older single run)."""
    runs = [r for r in report.get("runs", []) if "error" not in r and cell_of(r) == cell_of(row)]
    values = [v for r in runs if is_number(v := figure(r, path))]
    if values:
        return {"samples": values}
    found = row.get("range", {}).get(".".join(path))
    return {"low": found[0], "high": found[1]} if found else {}


def _cell_results(report: CompareReport, row: MeasuredRow) -> list[dict]:
    """Every figure a successful row holds, labelled with its cell (older rows ran float32 in one process)."""
    labels: dict[str, Any] = {"backend": row["backend"], "size": row["size"],
                              "precision": row.get("precision") or "fp32", "workers": row.get("workers", 1)}
    found = [records.result(key, unit, value, **_spread(report, row, (key,)), **labels)
             for key, unit in UNITS.items() if is_number(value := figure(row, (key,)))]
    for served in row.get("latency", {}):
        found += [records.result(key, unit, value, **_spread(report, row, path), **labels, served=served)
                  for key, unit in LATENCY_UNITS.items()
                  if is_number(value := figure(row, path := ("latency", served, key)))]
    return found


def _ceiling_results(report: CompareReport) -> list[dict]:
    """The matmul ceiling per engine and precision: its fastest product, spread over every product measured."""
    ceilings: dict[str, tuple[dict[str, float], dict[str, CeilingRun]]] = {
        "fp32": (report["matmul_by_engine"], report.get("matmul_runs", {}))}
    ceilings.update({p: (c["by_engine"], report.get("ceiling_runs", {}).get(p, {}))
                     for p, c in report.get("ceilings", {}).items()})
    return [records.result("ceiling_gflop_s", "GFLOP/s", value, engine=engine, precision=p,
                           samples=[s for run in runs.values() for s in run.get("samples", {}).get(engine, [])])
            for p, (by_engine, runs) in ceilings.items() for engine, value in by_engine.items()]


def _cell(row: CompareRow) -> dict:
    """What a row says besides its figures: its engine and threads, its rounds, and any error."""
    served = {} if "error" in row else row.get("latency", {})
    latency_errors = {s: e["error"] for s, e in served.items() if "error" in e}
    found = {"backend": row["backend"], "size": row["size"], "precision": row.get("precision") or "fp32",
             "workers": row.get("workers", 1), "engine": row.get("engine"), "threads": row.get("threads"),
             "rounds": row.get("rounds"), "failed_rounds": row.get("failed_rounds"), "error": row.get("error"),
             "latency_errors": latency_errors}
    return {k: v for k, v in found.items() if v not in (None, {})}


def _merge(envs: list[dict]) -> dict:
    """One environment from several: each field's value, or its distinct values joined by " / "."""
    values: dict[str, list] = {}
    for env in envs:
        for key, value in env.items():
            values.setdefault(key, [])
            if value is not None and value not in values[key]:
                values[key].append(value)
    return {k: (v[0] if len(v) == 1 else " / ".join(map(str, v)) if v else None) for k, v in values.items()}


def environment(report: CompareReport) -> dict:
    """The environment of a report's rows (each row's interpreter, Python, NumPy and framework versions),
    with ``by_backend`` where the backends ran in different interpreters; an older report's is its
    machine block's one interpreter."""
    envs, interpreters = {}, set()
    for row in report["rows"]:
        env = row.get("env") or {}
        if env.get("python") and row["backend"] not in envs:
            interpreters.add(env.get("executable"))
            folder = Path(env["executable"]).parent.parent.name if env.get("executable") else None
            name = records.ENVIRONMENTS.get(folder) if folder else None
            envs[row["backend"]] = {"name": name, **{k: v for k, v in env.items() if k != "executable"}}
    if not envs:
        m = report["machine"]
        return {"name": None, "python": m.get("python"), **m.get("versions", {})}
    merged = _merge(list(envs.values()))
    return {**merged, "by_backend": envs} if len(interpreters) > 1 else merged


def _where(path: str) -> str:
    """A report's path as a record names it: relative to the project where it lies inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(records.ROOT)) if resolved.is_relative_to(records.ROOT) else str(path)


def _provenance(report: CompareReport, report_path: str | None) -> tuple[tuple | None, dict | None]:
    """The commit a record states and its ``source``: the run's own where the report recorded it, else the
    commit that wrote ``report_path`` with a note saying so, else (no path) this checkout's."""
    if report.get("commit"):
        return tuple(report["commit"]), None
    if not report_path:
        return None, None
    return (records.file_commit(Path(report_path).resolve()), None), {"file": _where(report_path),
                                                                      "commit_note": COMMIT_NOTE}


def record(report: CompareReport, report_path: str | None = None) -> dict:
    """The record (kind "compare") of a compare report, as this version writes it or as older ones did: a
    result per figure of every row (spread over its rounds), per served model's latency and per engine's
    matmul ceiling, with the report's command, date, machine and the rows' environment. A report that did
    not record its commit gets the commit that wrote ``report_path``, and says so in ``source``."""
    m = report["machine"]
    machine_info = m.get("system") or records.machine_from_text(m["cpu"], m["cores"])
    where = _where(report_path) if report_path else None
    commit_info, source = _provenance(report, report_path)
    results = [x for row in report["rows"] if "error" not in row for x in _cell_results(report, row)]
    if report.get("wall_s"):
        results.append(records.result("command_seconds", "s", report["wall_s"]))
    details: dict[str, Any] = {k: v for k in ("arch", "hidden", "batch_size", "seconds", "rounds", "train_epochs",
                                              "device", "latency_requests", "precisions", "ceilings_skipped")
                               if (v := report.get(k))}
    before = report.get("matmul_runs", {}).get("before")
    details.update(ceiling_size=before["size"] if before else None, threads=m.get("threads"),
                   cells=[_cell(row) for row in report["rows"]])
    return records.make("compare", results + _ceiling_results(report), command=report.get("command") or None,
                        date=m["date"], machine_info=machine_info, environment_info=environment(report),
                        commit_info=commit_info, report=where, details={k: v for k, v in details.items() if v},
                        source=source)
