"""``vgg compare`` writes a record of its run, and ``vgg results compare`` judges two such records by their
rounds: real runs of the CLI (torch, the tiny VGG), whose figures are never checked for speed, only for what
the records say of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.tools import records
from helpers import ROOT, load_backend
from tiny_data import HIDDEN, fake_files

ROUNDS = 2
pytestmark = [pytest.mark.backend("torch"), pytest.mark.slow, pytest.mark.once]


def vgg(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common.tools.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two `vgg compare` runs of the same tree, side by side (their figures are not the point): their
    record files."""
    load_backend("torch")
    folder = tmp_path_factory.mktemp("compare-records")
    fake_files(folder / "data", n_train=64, n_test=16)
    env = {**os.environ, "VGG_CEILING_SIZE": "256"}  # the record, not the ceiling, is under test
    procs = [subprocess.Popen([sys.executable, "-m", "common.tools.cli", "compare", "--backends", "torch",
                               "--arch", "tiny", "--resize", "32", "--hidden", str(HIDDEN), "--batch-size", "8",
                               "--seconds", "0.5", "--rounds", str(ROUNDS), "--no-verify",
                               "--data-dir", str(folder / "data"), "--out", str(folder / name)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in ("a", "b")]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
    found = [sorted((folder / name).glob("*-compare-*.json")) for name in ("a", "b")]
    assert all(len(f) == 1 for f in found), found  # one record per run, beside compare.json
    return [f[0] for f in found]


def test_a_compare_run_writes_a_valid_record_with_every_round(runs):
    record = records.read(runs[0])
    assert records.validate(record.data) == [] and record.data["kind"] == "compare"
    assert record.data["commit"] and record.data["machine"] == records.machine()
    assert record.data["environment"]["python"] and record.data["environment"]["torch"]
    cell = record.results(backend="torch")
    assert {r["metric"] for r in cell} >= {"train_ex_s", "infer_ex_s", "train_gflop_s", "first_step_s",
                                           "peak_rss_mb", "forward_ms", "backward_update_ms"}
    for result in cell:
        assert result["labels"] == {"backend": "torch", "size": 32, "precision": "fp32", "workers": 1}
        assert result["spread"]["n"] == ROUNDS == len(result["spread"]["samples"]), result
    report = json.loads((runs[0].parent / "compare.json").read_text())
    assert record.value("train_ex_s", backend="torch") == report["rows"][0]["train_ex_s"]
    assert record.results("ceiling_gflop_s", engine="torch", precision="fp32")


def test_results_compare_says_not_distinguishable_where_the_rounds_overlap(runs):
    a, b = (records.read(path) for path in runs)
    proc = vgg("results", "compare", str(runs[0]), str(runs[1]), "--paths", *(str(p.parent) for p in runs))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for ra in a.results(backend="torch"):
        rb = b.one(ra["metric"], **ra["labels"])
        overlap = ra["spread"]["low"] <= rb["spread"]["high"] and rb["spread"]["low"] <= ra["spread"]["high"]
        line = next(x for x in lines if x.split()[:1] == [ra["metric"]])
        assert line.endswith(" not distinguishable" if overlap else "  distinguishable"), (line, ra, rb)


def test_results_compare_refuses_records_of_another_machine_unless_asked(runs, tmp_path):
    other = records.read(runs[1]).data
    other["machine"] = {**other["machine"], "cpu": f"{other['machine']['cpu']} (another machine)"}
    elsewhere = records.write(other, tmp_path)
    proc = vgg("results", "compare", str(runs[0]), str(elsewhere))
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "--any-machine" in proc.stderr, proc.stderr
    proc = vgg("results", "compare", str(runs[0]), str(elsewhere), "--any-machine")
    assert proc.returncode == 0 and "train_ex_s" in proc.stdout, proc.stderr
