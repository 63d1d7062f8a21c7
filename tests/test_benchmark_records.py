"""The scripts in benchmarks/ write a record of every run, never over another run's files, and the committed
records the docs' tables read are what those scripts' own record functions make of the committed results.
Figures are checked for presence and consistency, never for speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.tools import records
from helpers import ACTIVE, NO_REAL_DATA, REAL_DATA, ROOT, load_backend

sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"
#: a toy measurement: one tiny size, short cells, a small batch
TOY = ("--seconds", "0.1", "--batch-size", "4")


def script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python benchmarks/ARGS`` from the project's folder."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def only_record(folder: Path) -> records.Record:
    """The one record a run wrote into ``folder``, checked for provenance."""
    (record,) = records.find([folder])
    assert records.validate(record.data) == [], records.validate(record.data)
    return record


def samples(result: dict) -> list[float]:
    return result["spread"]["samples"]


@pytest.mark.once
@pytest.mark.slow
def test_book_reference_records_every_round_and_the_ratio_round_by_round(tmp_path):
    name = ACTIVE[0]
    load_backend(name)
    out = tmp_path / "run"
    proc = script("benchmarks/book_reference.py", "--backends", name, "--sizes", "32", "--rounds", "2", *TOY,
                  "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    record = only_record(out)
    assert record.data["kind"] == "book-reference" and record.data["details"]["rounds"] == 2
    assert record.data["command"].startswith("python benchmarks/book_reference.py --backends")
    book, mine = (record.one("train_ex_s", code=code, backend=name, size=32) for code in ("book", "project"))
    ratio = record.one("ratio", backend=name, size=32)
    assert ratio["spread"]["n"] == 2
    assert samples(ratio) == pytest.approx([m / b for b, m in zip(samples(book), samples(mine))])
    again = script("benchmarks/book_reference.py", "--backends", name, "--sizes", "32", "--out", str(out))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert len(list(out.glob("*.json"))) == 2  # the rows and the one record, untouched


@pytest.mark.once
@pytest.mark.slow
def test_ab_records_each_variant_and_names_one_that_failed(tmp_path):
    name = ACTIVE[0]
    load_backend(name)
    out = tmp_path / "ab"
    proc = script("benchmarks/ab.py", name, "32", "base=", "same=VGG_AB_TEST=1", "broken=PYTHONHOME=/nonexistent",
                  "--rounds", "2", *TOY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "ab.json").read_text())
    record = only_record(out)
    assert record.data["kind"] == "ab" and set(record.data["details"]["failed"]) == {"broken"}
    import ab
    ratio = record.one("ratio", variant="same", backend=name, size=32)
    assert samples(ratio) == pytest.approx(ab.ratios(report, "same")) and ratio["spread"]["n"] == 2
    assert record.results("ratio", variant="broken") == [] and record.results("ratio", variant="base") == []


@pytest.mark.slow
@pytest.mark.skipif(REAL_DATA is None, reason=NO_REAL_DATA)
def test_the_loader_benchmark_writes_its_figures_and_record_into_a_folder_never_over_a_file(tmp_path):
    name = ACTIVE[0]
    load_backend(name)
    out = tmp_path / "loader"
    env = {"VGG_DATA_DIR": str(REAL_DATA)}
    proc = script("benchmarks/loader_throughput.py", "--backends", name, "--sizes", "32", "--seconds", "0.2",
                  "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    record = only_record(out)
    assert record.data["kind"] == "loader-throughput" and record.value("loader_images_s", backend=name, size=32) > 0
    again = script("benchmarks/loader_throughput.py", "--backends", name, "--out", str(out), env=env)
    assert again.returncode == 2 and "another run's" in again.stderr


@pytest.mark.slow
def test_the_gpu_step_measures_nothing_without_a_gpu_and_records_the_machine_where_it_does(tmp_path):
    """On a CPU the script says so and writes no record; its record function, given a GPU's rows, states the
    machine (with its GPU, where nvidia-smi answers) beside the figures."""
    import gpu_step
    if not gpu_step.records.machine()["gpu"]:
        proc = script("benchmarks/gpu_step.py", "--out", str(tmp_path))
        assert proc.returncode == 0 and "nothing measured" in proc.stdout and not list(tmp_path.iterdir())
    record = gpu_step.record([{"backend": "torch", "precision": "bf16", "ex_s": 100.0}],
                             command="bash benchmarks/gpu_check.sh out")
    assert records.validate(record) == [] and record["kind"] == "gpu-check" and "gpu" in record["machine"]
    assert record["results"][0]["labels"] == {"backend": "torch", "precision": "bf16", "size": 224, "device": "gpu"}


def same_provenance(stored: records.Record) -> dict:
    """What ``records.make`` needs to make ``stored`` again."""
    d = stored.data
    return {"command": d["command"], "date": d["date"], "machine_info": d["machine"],
            "environment_info": d["environment"], "commit_info": (d["commit"], d["dirty"]),
            "report": d.get("report"), "source": d.get("source")}


@pytest.mark.parametrize("record_id, script_name, result", [
    ("20261124-book-reference-all-zen3", "book_reference", "book-reference-zen3/book_reference.json"),
    ("20261205-book-reference-issue24-after-zen3", "book_reference", "book-reference-zen3-issue24/after.json"),
    ("20261124T031700-export-serve-small-56-zen3", "export_serve", "export-serve-zen3/export-serve.json"),
    ("20261206T214917-boundary-cost-small-56-zen3", "boundary_cost", "boundary-zen3/boundary-cost.json"),
])
def test_a_committed_record_is_what_its_script_makes_of_the_committed_result(record_id, script_name, result):
    stored = records.read(records.STORE / f"{record_id}.json")
    output = json.loads((RESULTS / result).read_text())
    module = __import__(script_name)
    if script_name == "book_reference":
        made = module.record(output, stored.data["details"], **same_provenance(stored))
    else:
        made = module.record(output, **same_provenance(stored))
    assert made["results"] == stored.data["results"] and made["id"].startswith(record_id[:8])
