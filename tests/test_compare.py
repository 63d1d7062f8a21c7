"""``vgg compare`` end to end: every backend measured in its own subprocess, in interleaved rounds summarised
as medians and ranges, with the step split and serving latency; a broken one is a failed row. Figures are
checked for presence, order and consistency, never for speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.core.backends import BACKENDS
from common.tools import cli, compare as compare_tool, compare_report
from common.tools.measure import MIN_REQUESTS
from common.tools.spreads import spread, summarise, versus_fastest
from helpers import ABSENT, ACTIVE, ROOT, load_backend
from tiny_data import HIDDEN, fake_files

#: batch-1 requests per server in these tests (the command's own least is 1,000)
REQUESTS = 40


def check_latency(row: dict) -> None:
    """Every server of a row measured, its percentiles in order, or (ONNX only) a missing package named."""
    assert set(row["latency"]) == {"live", "native", "onnx"}, row["latency"]
    for served, entry in row["latency"].items():
        if "error" in entry and served == "onnx" and "not installed" in entry["error"]:
            continue
        assert "p50_ms" in entry and 0 < entry["p50_ms"] <= entry["p90_ms"] <= entry["p99_ms"], (served, entry)
        assert entry["requests"] == REQUESTS and (served == "live" or entry["export_s"] > 0)


def compare(tmp_path: Path, backends: str, extra_path: Path | None = None,
            *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    fake_files(tmp_path / "data", n_train=64, n_test=16)
    paths = [str(extra_path)] if extra_path else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(ROOT)]), "VGG_CEILING_SIZE": "1024",
           "VGG_LATENCY_REQUESTS": str(REQUESTS)}  # the arithmetic, not the figures, is under test
    proc = subprocess.run([sys.executable, "-m", "common.tools.cli", "compare", "--backends", backends,
                           "--arch", "small",
                           "--resize", "32", "--hidden", str(HIDDEN), "--batch-size", "8", "--seconds", "1",
                           "--data-dir", str(tmp_path / "data"), "--no-verify", "--out", str(tmp_path / "report"),
                           *extra],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = tmp_path / "report" / "compare.json"
    return proc, json.loads(report.read_text()) if report.exists() else {}


@pytest.mark.slow
def test_compare_measures_every_backend_and_writes_the_report(all_backends, tmp_path):
    """One run for the whole report (a compare of four backends is the suite's slowest kind of test): a row
    per backend, the ceiling before and after, the latency, the charts (the worker counts' rows and scaling
    are one backend's, in the rounds test below: each engine's workers are tested in test_distributed). Where
    `.ci/test` names a second environment (VGG_OTHER_PYTHON), one backend runs under that interpreter: MXNet
    from the NumPy 1 environment beside the NumPy 2 one, or else JAX, and every row records the versions it
    ran on."""
    names = list(all_backends)
    other = os.environ.get("VGG_OTHER_PYTHON")
    there = ("mxnet" if "mxnet" in ABSENT else "jax") if other else None
    if there and there not in names:
        names.append(there)
    proc, report = compare(tmp_path, ",".join(names), None, "--rounds", "1", "--latency",
                           *(["--python", f"{there}={other}"] if there else []))
    assert proc.returncode == 0, proc.stderr
    assert [(r["backend"], r["workers"]) for r in report["rows"]] == [(n, 1) for n in names]
    for row in report["rows"]:
        assert "error" not in row, row
        assert row["train_ex_s"] > 0 and row["peak_rss_mb"] > 0 and row["threads"] >= 1 and row["train_gflop_s"] > 0
        assert row["infer_ex_s"] > 0 and row["first_step_s"] > 0 and row["build_s"] >= 0
        assert row["env"]["numpy"] and all(row["env"][dist] for dist in BACKENDS[row["backend"]].distributions)
        assert row["env"]["executable"] == (other if row["backend"] == there else sys.executable)
        assert row["forward_ms"] > 0 and row["step_ms"] > 0  # the step split; never which is faster
        assert row["forward_ms"] + row["backward_update_ms"] == pytest.approx(row["step_ms"])
        assert "convolutions" in row["kernels"]  # which kernels ran: JAX's path depends on its version
        check_latency(row)
    assert report["matmul_gflop_s"] > 0 and report["machine"]["cores"] >= 1
    spread = report["matmul_spread"]  # measured before and after the rows: the ceiling is the faster
    assert set(report["matmul_runs"]) == {"before", "after"}
    assert 0 < spread["low"] <= spread["high"] == report["matmul_gflop_s"] == max(spread["before"], spread["after"])
    md = (tmp_path / "report" / "compare.md").read_text()
    assert md.startswith(f"# vgg compare: small, hidden layers {HIDDEN} wide, batch 8") and report["hidden"] == HIDDEN
    assert "matmul ceiling" in md and "the fastest 1024x1024 product" in md and "products ran at" in md
    assert all(f"{name}: {row['kernels']}" in md for name, row in zip(names, report["rows"]))
    assert "| forward ms | backward + update ms |" in md and "| served by | p50 ms | p90 ms | p99 ms |" in md
    assert all(f"| {name} | 32 | fp32 | ONNX (ONNX Runtime) |" in md for name in names)
    for chart in ("train_throughput.png", "infer_throughput.png", "train_gflops.png", "memory.png",
                  "step_split.png", "latency.png"):
        assert (tmp_path / "report" / chart).read_bytes()[:4] == b"\x89PNG"
    if there:
        other_version = subprocess.run([other, "-c", "import platform; print(platform.python_version())"],
                                       capture_output=True, text=True, check=True).stdout.strip()
        assert next(r for r in report["rows"] if r["backend"] == there)["env"]["python"] == other_version
        assert f"`{other}`" in md and f"`{sys.executable}`" in md


@pytest.mark.parametrize("args, message", [
    (["--rounds", "0"], "--rounds 0 is not allowed: it must be an integer >= 1"),
    (["--latency", "--requests", "999"], f"--requests 999 is not allowed: it must be an integer >= {MIN_REQUESTS}"),
    (["--requests", "2000"], "--requests 2000: it counts the requests of --latency; give both")])
def test_bad_rounds_and_requests_are_one_line_before_anything_runs(args, message, tmp_path, capsys):
    try:
        status = cli.main(["compare", *args, "--out", str(tmp_path / "report")])
    except SystemExit as exc:  # argparse's own exit
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "report").exists()


@pytest.mark.slow
def test_a_broken_backend_is_a_failed_row(tmp_path):
    """A real broken install: an ``mxnet`` package that raises on import, first on the children's path."""
    working = next(name for name in ACTIVE if name != "mxnet")
    load_backend(working)
    broken = tmp_path / "broken" / "mxnet"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this mxnet is broken on purpose')\n")
    proc, report = compare(tmp_path, f"{working},mxnet", tmp_path / "broken", "--rounds", "1")
    assert proc.returncode == 0, proc.stderr
    rows = {row["backend"]: row for row in report["rows"]}
    assert rows[working]["train_ex_s"] > 0
    assert "broken on purpose" in rows["mxnet"]["error"], rows["mxnet"]
    assert "mxnet" in proc.stdout and "failed" in proc.stdout


@pytest.mark.slow
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


@pytest.mark.slow
def test_compare_runs_interleaved_rounds_and_reports_each_figure_as_median_and_range(tmp_path):
    """Two rounds of one backend in one process and in two workers: every round's run is kept in compare.json,
    and each row's figures are the medians of its runs, inside the ranges the runs span; the console and the
    Markdown give both, and the scaling from one worker to two."""
    name = ACTIVE[0]
    load_backend(name)
    proc, report = compare(tmp_path, name, None, "--arch", "tiny", "--rounds", "2", "--workers", "1,2")
    assert proc.returncode == 0, proc.stderr
    assert report["rounds"] == 2 and [(r["backend"], r["workers"], r["round"]) for r in report["runs"]] == [
        (name, 1, 1), (name, 2, 1), (name, 1, 2), (name, 2, 2)]
    row, pair = report["rows"]
    assert pair["workers"] == 2 and "error" not in pair and pair["train_ex_s"] > 0 and pair["rounds"] == [1, 2]
    assert "latency" not in pair and "forward_ms" not in pair  # a data-parallel row measures training only
    assert row["rounds"] == [1, 2] and "failed_rounds" not in row
    for key in ("train_ex_s", "infer_ex_s", "train_gflop_s", "build_s", "first_step_s", "peak_rss_mb",
                "forward_ms", "backward_update_ms", "step_ms"):
        values = [run[key] for run in report["runs"] if run["workers"] == 1]
        median, low, high = spread(row, key)
        assert [low, high] == [min(values), max(values)] and low <= median <= high, key
    assert row["forward_ms"] > 0 and row["step_ms"] > 0
    assert "median (range) over 2 round(s):" in proc.stdout and " 2/2 " in proc.stdout
    md = (tmp_path / "report" / "compare.md").read_text()
    assert "2 interleaved round(s)" in md and "| train vs fastest |" in md and f"| {name} | 32 | fp32 | 1 x" in md
    assert "not a speed-up" in md and "scaling efficiency" in md and f"| {name} | 32 | 2 |" in md


def run(backend: str, round_: int, train: float, p50: float, **more) -> dict:
    """A run as a compare child reports it, with the figures these checks need."""
    return {"backend": backend, "size": 32, "precision": "fp32", "workers": 1, "round": round_, "train_ex_s": train,
            "latency": {"live": {"p50_ms": p50, "p90_ms": 2 * p50, "p99_ms": 3 * p50, "requests": 1000}}, **more}


def test_a_row_is_the_median_of_its_rounds_and_a_failed_round_is_named():
    row = summarise([run("torch", 1, 100, 1.0, history=[1]), {**run("torch", 2, 0, 0), "error": "killed"},
                     run("torch", 3, 120, 3.0), run("torch", 4, 90, 2.0)])
    assert row["train_ex_s"] == 100 and row["range"]["train_ex_s"] == [90, 120]
    assert row["latency"]["live"]["p99_ms"] == 6.0 and row["range"]["latency.live.p50_ms"] == [1.0, 3.0]
    assert row["rounds"] == [1, 3, 4] and row["failed_rounds"] == {"2": "killed"} and row["history"] == [1]
    assert summarise([{**run("tf", 1, 0, 0), "error": "no tf"}])["error"] == "no tf"


def test_a_difference_within_the_rounds_spread_is_a_tie():
    rows = [summarise([run(name, k + 1, v, 1.0) for k, v in enumerate(values)])
            for name, values in (("torch", (100, 110)), ("tf", (105, 120)), ("jax", (50, 55)))]
    assert [versus_fastest(r, rows, "train_ex_s") for r in rows] == \
        ["0.93x (tie with tf)", "fastest (tie with torch)", "0.47x"]


def test_a_precision_has_a_ceiling_of_its_own_only_where_the_machine_has_its_products():
    """A GPU's every format; a CPU's bf16 only with AVX-512 BF16 or AMX; elsewhere the rows use float32's, said."""
    assert compare_tool.own_ceilings(["fp32", "bf16", "fp16"], "cpu", {"avx2", "fma"}) == ([], {
        "bf16": "this CPU has no bf16 product instructions: its bf16 products are emulated",
        "fp16": "this CPU has no fp16 product instructions: its fp16 products are emulated"})
    assert compare_tool.own_ceilings(["fp32", "bf16", "fp16"], "cpu", {"avx512_bf16"})[0] == ["bf16"]
    assert compare_tool.own_ceilings(["bf16", "fp32", "tf32"], "gpu", set()) == (["bf16", "tf32"], {})
    report = {"matmul_gflop_s": 100.0, "ceilings": {"bf16": {"gflop_s": 400.0}}}
    assert compare_report.ceiling_of(report, "bf16") == 400.0 and compare_report.ceiling_of(report, "fp16") == 100.0


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_bf16_rows_are_held_against_their_own_ceiling_or_say_why_not(tmp_path):
    """`vgg compare --precision fp32,bf16`: a row per precision with its speed-up over fp32, and the bf16
    product ceiling measured where this CPU has bf16 instructions, else the reason beside float32's."""
    proc, report = compare(tmp_path, "torch", None, "--arch", "tiny", "--rounds", "1", "--precision", "fp32,bf16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["precision"] for r in report["rows"]] == ["fp32", "bf16"]
    own, skipped = compare_tool.own_ceilings(["bf16"], "cpu")
    md = (tmp_path / "report" / "compare.md").read_text()
    if own:
        ceiling = report["ceilings"]["bf16"]
        assert ceiling["gflop_s"] == max(ceiling["by_engine"].values()) > 0 and "numpy" not in str(ceiling)
        assert set(report["ceiling_runs"]["bf16"]) == {"before", "after"} and "bf16 matmul ceiling" in md
    else:
        assert report["ceilings"] == {} and report["ceilings_skipped"] == skipped
        assert "bf16: no ceiling of its own (this CPU has no bf16 product instructions" in md
    assert "| torch | 32 | bf16 | 1 x" in md and "% of matmul ceiling" in md
