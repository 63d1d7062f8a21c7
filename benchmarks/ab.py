"""A/B of the project's training step under variants of its environment or its code, interleaved in one run.

A variant is LABEL=SETTINGS. SETTINGS are ``;``-separated NAME=VALUE environment variables given to the
child at its start (glibc tunables and preloaded allocators are read only then), and ``tree=PATH`` runs the
code of another checkout (a change to the code against this one). Every (round, variant) is its own process;
the order rotates from round to round, and the ratio to the first variant is taken within each round.

    python benchmarks/ab.py torch 224 base= hugetlb='GLIBC_TUNABLES=glibc.malloc.hugetlb=1' --rounds 3
    python benchmarks/ab.py jax 56 base= donate=tree=/tmp/vgg-donate
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from book_reference import check_measuring  # noqa: E402  (this folder is on the path of a script run from it)
from book_reference import check_size, run_child

from common.core import backends  # noqa: E402
from common.runtime.machine import cores, cpu  # noqa: E402
from common.tools.compare import child_env  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict[str, str], Path]:
    """``LABEL=NAME=VALUE;tree=PATH`` -> (label, environment, checkout)."""
    label, _, settings = text.partition("=")
    env, tree = {}, ROOT
    for item in filter(None, settings.split(";")):
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"variant {text!r}: {item!r} is not NAME=VALUE")
        if name == "tree":
            tree = Path(value).resolve()
            if not (tree / "benchmarks" / "book_reference.py").is_file():
                raise ValueError(f"variant {text!r}: {tree} is not a checkout of this project")
        else:
            env[name] = value
    if not label:
        raise ValueError(f"variant {text!r} has no label (LABEL=SETTINGS)")
    return label, env, tree


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backend", choices=backends.NAMES)
    p.add_argument("size", type=int)
    p.add_argument("variants", nargs="+", help="LABEL=SETTINGS; the first is the baseline")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each variant's ratio is per round")
    p.add_argument("--seconds", type=float, default=15, help="timed steps per run, after two warm-up steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--momentum", type=float, default=0.0, help="the step's SGD momentum (default 0, as the book)")
    a = p.parse_args()
    try:
        variants = [parse_variant(v) for v in a.variants]
    except ValueError as e:
        p.error(str(e))
    check_size(p, "size", a.size)
    check_measuring(p, a)
    print(f"{a.backend} at {a.size}, batch {a.batch_size}, momentum {a.momentum:g}; {cores()} cores, {cpu()}; "
          f"{a.rounds} rounds of {a.seconds:g} s", flush=True)
    rows: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
    ratios: dict[str, list[float]] = {label: [] for label, _, _ in variants[1:]}
    for r in range(a.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        got = {}
        for label, env, tree in order:
            # the tree's own copy of book_reference.py measures its code
            row = run_child(tree / "benchmarks" / "book_reference.py", ["project", a.backend, str(a.size)], a,
                            {**child_env(), **env, "PYTHONPATH": str(tree)}, tree)
            if isinstance(row, str):
                print(f"round {r + 1}: {label} failed: {row}", flush=True)
                continue
            got[label] = row
            rows[label].append(row)
            print(f"round {r + 1}: {label:12} {row['ex_s_median']:8.1f} ex/s (median step; mean "
                  f"{row['ex_s']:.1f}), peak {row['peak_rss_mb']:.0f} MB", flush=True)
        base = variants[0][0]
        for label in ratios:
            if base in got and label in got:
                ratios[label].append(got[label]["ex_s_median"] / got[base]["ex_s_median"])
    print("\n| variant | ex/s median (range) | ratio to " + variants[0][0] + " | peak RSS MB |\n|---|---|---|---|")
    for label, _, _ in variants:
        ex = [row["ex_s_median"] for row in rows[label]]
        if not ex:
            print(f"| {label} | failed | | |")
            continue
        ratio = ratios.get(label)
        print(f"| {label} | {statistics.median(ex):.1f} ({min(ex):.1f}-{max(ex):.1f}) | "
              + (f"{statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f})" if ratio else "—")
              + f" | {statistics.median(row['peak_rss_mb'] for row in rows[label]):.0f} |")


if __name__ == "__main__":
    main()
