"""The ``vgg compare`` report: compare.json, compare.md (tables of every row, the data-parallel scaling, the
environments) and PNG charts, each rewritten atomically after every row."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from common.core import arch, atomic, backends
from common.runtime.machine import cores, cpu

#: what each framework is told, with the same core count everywhere
THREADS = {name: b.threads for name, b in backends.BACKENDS.items()}


def machine() -> dict:
    """Cores, CPU model and vector ISA, thread settings, date (each row holds its own versions)."""
    return {"cores": cores(), "cpu": cpu(), "threads": THREADS,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def merge_ceilings(report: dict) -> None:
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


def speedup(row: dict, rows: list[dict]) -> float | None:
    """A row's training throughput over its backend's fp32 row at the same size and worker count."""
    key = (row["backend"], row["size"], row.get("workers", 1))
    base = next((r for r in rows if "error" not in r and r.get("precision", "fp32") == "fp32"
                 and (r["backend"], r["size"], r.get("workers", 1)) == key), None)
    return row["train_ex_s"] / base["train_ex_s"] if base else None


def _table(report: dict) -> str:
    """The Markdown table of a report: a row per backend, size, precision and worker count."""
    ceiling = report["matmul_gflop_s"]
    trained = report["train_epochs"]
    lines = ["| backend | size | precision | workers x threads | train ex/s | vs fp32 | infer ex/s | GFLOP/s (train) | "
             "% of fp32 matmul ceiling | logits vs float64 oracle | build s | first step s | peak RSS MB |"
             + (" test acc |" if trained else ""),
             "|---" * (14 if trained else 13) + "|"]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['size']} | {r.get('precision', 'fp32')} | {r.get('workers', 1)} | "
                         f"failed: {r['error']} |" + " |" * 8 + (" |" if trained else ""))
            continue
        infer = f"{r['infer_ex_s']:.1f}" if "infer_ex_s" in r else "—"
        gain = speedup(r, report["rows"])
        error = f"{r['parity_error']:.1e}" if "parity_error" in r else "—"
        lines.append(f"| {r['backend']} | {r['size']} | {r.get('precision', 'fp32')} | "
                     f"{r.get('workers', 1)} x {r.get('threads')} | {r['train_ex_s']:.1f} | "
                     f"{f'{gain:.2f}x' if gain else '—'} | {infer} | "
                     f"{r['train_gflop_s']:.1f} | {100 * r['train_gflop_s'] / ceiling:.0f} % | {error} | "
                     f"{r['build_s']:.2f} | {r['first_step_s']:.2f} | {r['peak_rss_mb']:.0f} |"
                     + (f" {r['test_acc']:.3f} |" if trained and "test_acc" in r else " — |" if trained else ""))
    return "\n".join(lines)


def scaling(rows: list[dict]) -> list[dict]:
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
    several = len({r.get("precision", "fp32") for r in rows}) > 1

    def bar(r: dict) -> str:  # a bar per backend, and per precision where the report has several
        return f"{r['backend']} {r.get('precision', 'fp32')}" if several else r["backend"]

    names = list(dict.fromkeys(r["backend"] for r in rows))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    for key, label, stem in (("train_ex_s", "training examples/s", "train_throughput"),
                             ("infer_ex_s", "inference examples/s", "infer_throughput"),
                             ("peak_rss_mb", "peak RSS (MB)", "memory")):
        fig = Figure(figsize=(3.2 * len(sizes), 3), dpi=110)
        axes = fig.subplots(1, len(sizes), squeeze=False)
        for ax, size in zip(axes[0], sizes):
            shown = [r for r in rows if r["size"] == size]
            ax.bar([bar(r) for r in shown], [r[key] for r in shown],
                   color=[f"C{names.index(r['backend'])}" for r in shown])
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


def engines(by_engine: dict[str, float]) -> str:
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
          f"{engines(report['matmul_by_engine'])}; {_spread(report['matmul_spread'])})", "",
          *([f"On the GPU: {', '.join(sorted({r['device'] for r in report['rows'] if 'device' in r}))}; every "
             "timed step ends by reading its loss on the host, which waits for the device.", ""]
            if report.get("device") == "gpu" else []),
          _environments(report), "",
          "Threads: " + "; ".join(f"{k}: {v}" for k, v in m["threads"].items()), "", _table(report), "",
          _scaling_table(report), ""]
    atomic.write_text(out / "compare.md", "\n".join(md))
    _charts(report, out)
