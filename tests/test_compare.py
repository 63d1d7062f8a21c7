"""``vgg compare`` end to end: every backend measured in its own subprocess; a broken one is a failed row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common.core.backends import BACKENDS
from helpers import ABSENT, ACTIVE, load_backend
from tiny_data import HIDDEN, fake_files

ROOT = Path(__file__).resolve().parents[1]


def compare(tmp_path: Path, backends: str, extra_path: Path | None = None,
            *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    fake_files(tmp_path / "data", n_train=64, n_test=16)
    paths = [str(extra_path)] if extra_path else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(ROOT)]),
           "VGG_CEILING_SIZE": "1024"}  # the ceiling's arithmetic, not its figure, is under test
    proc = subprocess.run([sys.executable, "-m", "common.tools.cli", "compare", "--backends", backends,
                           "--arch", "small",
                           "--resize", "32", "--hidden", str(HIDDEN), "--batch-size", "8", "--seconds", "1",
                           "--data-dir", str(tmp_path / "data"), "--no-verify", "--out", str(tmp_path / "report"),
                           *extra],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = tmp_path / "report" / "compare.json"
    return proc, json.loads(report.read_text()) if report.exists() else {}


def test_compare_measures_every_backend_per_worker_count_and_writes_the_report(all_backends, tmp_path):
    """One run for the whole report (a compare of four backends is the suite's slowest kind of test): a row
    per backend and worker count, the ceiling before and after, the scaling, the charts. Where `.ci/test` names
    a second environment (VGG_OTHER_PYTHON), one backend runs under that interpreter: MXNet from the NumPy 1
    environment beside the NumPy 2 one, or else JAX, and every row records the versions it ran on."""
    names = list(all_backends)
    other = os.environ.get("VGG_OTHER_PYTHON")
    there = ("mxnet" if "mxnet" in ABSENT else "jax") if other else None
    if there and there not in names:
        names.append(there)
    proc, report = compare(tmp_path, ",".join(names), None, "--workers", "1,2",
                           *(["--python", f"{there}={other}"] if there else []))
    assert proc.returncode == 0, proc.stderr
    assert [(r["backend"], r["workers"]) for r in report["rows"]] == [(n, w) for n in names for w in (1, 2)]
    for row in report["rows"]:
        assert "error" not in row, row
        assert row["train_ex_s"] > 0 and row["peak_rss_mb"] > 0 and row["threads"] >= 1 and row["train_gflop_s"] > 0
        if row["workers"] == 1:  # inference and start-up are measured in one process only
            assert row["infer_ex_s"] > 0 and row["first_step_s"] > 0 and row["build_s"] >= 0
            assert row["env"]["numpy"] and all(row["env"][dist] for dist in BACKENDS[row["backend"]].distributions)
            assert row["env"]["executable"] == (other if row["backend"] == there else sys.executable)
    assert report["matmul_gflop_s"] > 0 and report["machine"]["cores"] >= 1
    spread = report["matmul_spread"]  # measured before and after the rows: the ceiling is the faster
    assert set(report["matmul_runs"]) == {"before", "after"}
    assert 0 < spread["low"] <= spread["high"] == report["matmul_gflop_s"] == max(spread["before"], spread["after"])
    md = (tmp_path / "report" / "compare.md").read_text()
    assert md.startswith(f"# vgg compare: small, hidden layers {HIDDEN} wide, batch 8") and report["hidden"] == HIDDEN
    assert "matmul ceiling" in md and "the fastest 1024x1024 product" in md and "products ran at" in md
    assert "not a speed-up" in md and "scaling efficiency" in md
    assert all(f"| {name} | 32 | 2 |" in md for name in names)
    for chart in ("train_throughput.png", "infer_throughput.png", "memory.png"):
        assert (tmp_path / "report" / chart).read_bytes()[:4] == b"\x89PNG"
    if there:
        other_version = subprocess.run([other, "-c", "import platform; print(platform.python_version())"],
                                       capture_output=True, text=True, check=True).stdout.strip()
        assert next(r for r in report["rows"] if r["backend"] == there)["env"]["python"] == other_version
        assert f"`{other}`" in md and f"`{sys.executable}`" in md


def test_a_broken_backend_is_a_failed_row(tmp_path):
    """A real broken install: an ``mxnet`` package that raises on import, first on the children's path."""
    working = next(name for name in ACTIVE if name != "mxnet")
    load_backend(working)
    broken = tmp_path / "broken" / "mxnet"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this mxnet is broken on purpose')\n")
    proc, report = compare(tmp_path, f"{working},mxnet", extra_path=tmp_path / "broken")
    assert proc.returncode == 0, proc.stderr
    rows = {row["backend"]: row for row in report["rows"]}
    assert rows[working]["train_ex_s"] > 0
    assert "broken on purpose" in rows["mxnet"]["error"], rows["mxnet"]
    assert "mxnet" in proc.stdout and "failed" in proc.stdout


def test_the_book_reference_runs_the_books_step_and_the_projects_in_every_backend(all_backends, tmp_path):
    """benchmarks/book_reference.py, the side-by-side the speed claims come from, at a toy size: a row per
    backend with both codes measured, and its report files."""
    proc = subprocess.run([sys.executable, "benchmarks/book_reference.py", "--backends", ",".join(all_backends),
                           "--sizes", "32", "--rounds", "1", "--seconds", "0.2", "--batch-size", "4",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "failed" not in proc.stderr + proc.stdout, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "| 32 |" in line]
    assert [row.split("|")[1].strip() for row in rows] == list(all_backends)
    assert {p.suffix for p in tmp_path.iterdir()} == {".md", ".json"}
