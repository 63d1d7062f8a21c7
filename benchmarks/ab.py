"""A/B of the project's training step under variants of its environment or its code, interleaved in one run.

A variant is LABEL=SETTINGS. SETTINGS are ``;``-separated NAME=VALUE environment variables given to the
child at its start (glibc tunables and preloaded allocators are read only then), ``tree=PATH`` runs the
code of another checkout (a change to the code against this one) and ``python=PATH`` runs it under another
interpreter (another environment's framework versions, as `.ci/setup` makes them). Every (round, variant) is
its own process; the order rotates from round to round, and the ratio to the first variant is taken within
each round.

    python benchmarks/ab.py torch 224 base= hugetlb='GLIBC_TUNABLES=glibc.malloc.hugetlb=1' --rounds 3
    python benchmarks/ab.py jax 56 base= donate=tree=/tmp/vgg-donate
    python benchmarks/ab.py jax 56 jax071= 'jax012=python=.venv-modern/bin/python'

Every run writes its rounds (``ab.json``) and its record (``vgg results show``) into ``--out`` (default ./reports
for the record alone).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from book_reference import (  # noqa: E402  (this folder is on the path of a script run from it)
    check_measuring,
    check_size,
    run_child,
)

from common.core import atomic, backends  # noqa: E402
from common.runtime.machine import cores, cpu  # noqa: E402
from common.tools import records  # noqa: E402
from common.tools.children import child_env  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict[str, str], Path, str]:
    """``LABEL=NAME=VALUE;tree=PATH;python=PATH`` -> (label, environment, checkout, interpreter)."""
    label, _, settings = text.partition("=")
    env, tree, python = {}, ROOT, sys.executable
    for item in filter(None, settings.split(";")):
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"variant {text!r}: {item!r} is not NAME=VALUE")
        if name == "tree":
            tree = Path(value).resolve()
            if not (tree / "benchmarks" / "book_reference.py").is_file():
                raise ValueError(f"variant {text!r}: {tree} is not a checkout of this project")
        elif name == "python":
            python = str(Path(value).absolute())
            if not os.access(python, os.X_OK):
                raise ValueError(f"variant {text!r}: {value} is not an executable interpreter")
        else:
            env[name] = value
    if not label:
        raise ValueError(f"variant {text!r} has no label (LABEL=SETTINGS)")
    return label, env, tree, python


def ratios(report: dict, label: str) -> list[float]:
    """``label``'s ratio to the baseline (the first variant) in every round both finished: median step against
    median step, within the round."""
    by_round: dict[int, dict[str, float]] = {}
    for run in report["runs"]:
        if "ex_s_median" in run:
            by_round.setdefault(run["round"], {})[run["variant"]] = run["ex_s_median"]
    base = report["variants"][0]["label"]
    return [got[label] / got[base] for _, got in sorted(by_round.items()) if base in got and label in got]


def record(output: dict, **provenance) -> dict:
    """The ab record of ``output`` (this script's JSON): per variant its examples/s (median step) and peak RSS
    with every round as a sample, and its ratio to the baseline taken round by round; a variant that failed
    is named in ``details.failed`` with its first error; ``provenance`` goes to ``records.make``."""
    results, failed = [], {}
    labels = {"backend": output["backend"], "size": output["size"]}
    for variant in output["variants"]:
        label = variant["label"]
        runs = [r for r in output["runs"] if r["variant"] == label]
        done = [r for r in runs if "ex_s_median" in r]
        if not done:
            failed[label] = next((r["failed"] for r in runs if "failed" in r), "no round ran")
            continue
        for metric, unit, key in (("train_ex_s", "ex/s", "ex_s_median"), ("peak_rss_mb", "MB", "peak_rss_mb")):
            values = [r[key] for r in done]
            results.append(records.result(metric, unit, statistics.median(values), samples=values, variant=label,
                                          **labels))
        ratio = ratios(output, label) if label != output["variants"][0]["label"] else []
        if ratio:
            results.append(records.result("ratio", "x", statistics.median(ratio), samples=ratio, variant=label,
                                          **labels))
    details = {k: output[k] for k in ("batch_size", "momentum", "rounds", "seconds")}
    details.update(baseline=output["variants"][0]["label"], variants=output["variants"], failed=failed)
    if output.get("note"):
        details["note"] = output["note"]
    return records.make("ab", results, details=details, **provenance)


def summary(report: dict) -> str:
    """The run's table: per variant its examples/s, ratio to the baseline and peak RSS, median (range)."""
    base = report["variants"][0]["label"]
    lines = [f"| variant | ex/s median (range) | ratio to {base} | peak RSS MB |", "|---|---|---|---|"]
    for variant in report["variants"]:
        label = variant["label"]
        done = [r for r in report["runs"] if r["variant"] == label and "ex_s_median" in r]
        if not done:
            lines.append(f"| {label} | failed | | |")
            continue
        ex = [r["ex_s_median"] for r in done]
        ratio = ratios(report, label) if label != base else []
        lines.append(f"| {label} | {statistics.median(ex):.1f} ({min(ex):.1f}-{max(ex):.1f}) | "
                     + (f"{statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f})" if ratio else "—")
                     + f" | {statistics.median(r['peak_rss_mb'] for r in done):.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backend", choices=backends.NAMES)
    p.add_argument("size", type=int)
    p.add_argument("variants", nargs="+", help="LABEL=SETTINGS; the first is the baseline")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each variant's ratio is per round")
    p.add_argument("--seconds", type=float, default=15, help="timed steps per run, after two warm-up steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--momentum", type=float, default=0.0, help="the step's SGD momentum (default 0, as the book)")
    p.add_argument("--out", default=None, help="a new folder for ab.json and the record (default: the record "
                                               "alone, into ./reports)")
    a = p.parse_args()
    try:
        variants = [parse_variant(v) for v in a.variants]
    except ValueError as e:
        p.error(str(e))
    check_size(p, "size", a.size)
    check_measuring(p, a)
    if a.out and (Path(a.out) / "ab.json").exists():
        p.error(f"--out {a.out}: it holds another run's ab.json; results are never overwritten")
    print(f"{a.backend} at {a.size}, batch {a.batch_size}, momentum {a.momentum:g}; {cores()} cores, {cpu()}; "
          f"{a.rounds} rounds of {a.seconds:g} s", flush=True)
    report = {"backend": a.backend, "size": a.size, "batch_size": a.batch_size, "momentum": a.momentum,
              "rounds": a.rounds, "seconds": a.seconds, "runs": [],
              "variants": [{"label": label, "env": env, "tree": None if tree == ROOT else str(tree),
                            **({"python": python} if python != sys.executable else {})}
                           for label, env, tree, python in variants]}
    for r in range(a.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for label, env, tree, python in order:
            # the tree's own copy of book_reference.py measures its code
            row = run_child(tree / "benchmarks" / "book_reference.py", ["project", a.backend, str(a.size)], a,
                            {**child_env(), **env, "PYTHONPATH": str(tree)}, tree, python)
            if isinstance(row, str):
                print(f"round {r + 1}: {label} failed: {row}", flush=True)
                report["runs"].append({"round": r + 1, "variant": label, "failed": row})
                continue
            report["runs"].append({"round": r + 1, "variant": label, "ex_s_median": row["ex_s_median"],
                                   "ex_s": row["ex_s"], "peak_rss_mb": row["peak_rss_mb"], "env": row["env"]})
            print(f"round {r + 1}: {label:12} {row['ex_s_median']:8.1f} ex/s (median step; mean "
                  f"{row['ex_s']:.1f}), peak {row['peak_rss_mb']:.0f} MB", flush=True)
    for variant in report["variants"]:  # what each variant ran on: its interpreter's versions
        variant["versions"] = next((r["env"] for r in report["runs"] if r["variant"] == variant["label"]
                                    and "env" in r), None)
    print("\n" + summary(report))
    out = Path(a.out) if a.out else Path("reports")
    if a.out:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / "ab.json", json.dumps(report, indent=1))
    if any("ex_s_median" in run for run in report["runs"]):
        print(f"ab: wrote the record {records.write(record(report), out)}")


if __name__ == "__main__":
    main()
