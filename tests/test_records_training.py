"""Records of training: ``vgg train`` writes one of its final figures into --out; the accuracy and
distributed-epoch collectors publish each run once, with the run's own provenance, and never remove or
rewrite another run's record; a race's record holds its report's figures and is no stranger in its --out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.runtime.history import History
from common.tools import race, race_report, records, train_record
from helpers import ROOT
from processes import vgg_cli
from tiny_data import HIDDEN, fake_files

torch_only = pytest.mark.backend("torch")  # the record is written by shared code: the cheapest backend stands for all


def train(data: Path, out: Path, *more: str) -> subprocess.CompletedProcess:
    """A one-epoch torch run of the small arch at 32x32 on made-up data."""
    proc = vgg_cli("train", "--backend", "torch", "--arch", "small", "--resize", "32", "--hidden", str(HIDDEN),
                   "--epochs", "1", "--batch-size", "8", "--data-dir", str(data), "--no-verify", "--no-progress",
                   "--out", str(out), *more)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def saved_records(folder: Path) -> dict[str, bytes]:
    """The record files in ``folder``, name -> bytes."""
    return {p.name: p.read_bytes() for p in folder.glob("*.json")} if folder.is_dir() else {}


@pytest.mark.slow
@torch_only
def test_vgg_train_writes_a_record_of_its_final_figures(tmp_path):
    fake_files(tmp_path / "data")
    out = tmp_path / "run"
    done = train(tmp_path / "data", out)
    [found] = train_record.in_folder(out)
    assert records.validate(found.data) == [] and found.data["kind"] == "train"
    assert f"wrote the record {found.path.name}" in done.stdout
    last = json.loads((out / "history.json").read_text())["rows"][-1]
    cell = {"backend": "torch", "arch": "small", "size": 32, "precision": "fp32", "workers": 1}
    assert found.value("test_acc", **cell) == last["test_acc"] and found.value("loss", **cell) == last["train_loss"]
    assert found.value("epochs", **cell) == 1 and found.value("seconds", **cell) == pytest.approx(last["seconds"])
    assert found.data["command"].startswith("vgg train --backend torch") and "--out" in found.data["command"]
    assert found.data["details"]["recipe"]["batch_size"] == 8 and found.data["details"]["history"][-1] == last
    before = found.path.read_bytes()
    train(tmp_path / "data", out, "--overwrite", "--seed", "3")  # the earlier run's files go, its record stays
    assert len(train_record.in_folder(out)) == 2 and found.path.read_bytes() == before


def fake_run(folder: Path, backend: str, date: str, workers: int = 1) -> dict:
    """A finished run's folder as ``vgg train`` leaves it (run.json, history.json and its train record), with
    made-up figures: what the collectors read, without a training."""
    settings = {"backend": backend, "arch": "small", "resize": 56, "precision": "fp32", "epochs": 2, "lr": 0.02,
                "batch_size": 128, "momentum": 0.9, "weight_decay": 0.0, "schedule": "cosine",
                "warmup_epochs": 1.0, "seed": 0, "hidden": 4096, "limit": None,
                "world": {"processes": workers, "devices": 1, "threads": 2 // workers,
                          "engine": "single process" if workers == 1 else "an engine"}}
    history = History()
    for epoch, acc in ((1, 0.8), (2, 0.9)):
        history.append(epoch=epoch, train_loss=1 - acc, train_acc=acc, test_acc=acc - 0.01, examples_per_sec=100.0,
                       seconds=600.0)
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(settings))
    (folder / "history.json").write_text(history.to_json())
    record = train_record.record(settings, history.rows, command=f"vgg train --backend {backend} ...", date=date,
                                 commit_info=("0" * 40, False))
    return json.loads(records.write(record, folder).read_text())


def collect(script: str, store: Path, *folders: Path, results: Path | None = None) -> None:
    extra = ["--results", str(results)] if results else []
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, folders), "--records",
                           str(store), *extra], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script, kind", [("accuracy_table.py", "accuracy"),
                                          ("distributed_table.py", "distributed-epoch")])
def test_a_collector_adds_one_record_per_run_and_touches_no_other(tmp_path, script, kind):
    a = fake_run(tmp_path / "a", "torch", "2026-12-01T10:00:00+00:00")
    b = fake_run(tmp_path / "b", "jax", "2026-12-02T10:00:00+00:00", workers=2)
    store, results = tmp_path / "records", tmp_path / "results"
    results_arg = results if script == "accuracy_table.py" else None
    collect(script, store, tmp_path / "a", results=results_arg)
    first = saved_records(store)
    assert len(first) == 1
    collect(script, store, tmp_path / "b", results=results_arg)
    second = saved_records(store)
    assert len(second) == 2 and all(second[name] == data for name, data in first.items())
    collect(script, store, tmp_path / "a", tmp_path / "b", results=results_arg)  # collected again: nothing changes
    assert saved_records(store) == second
    for run in (a, b):  # the run's own provenance and figures, under the benchmark's kind
        [published] = [json.loads(data) for data in second.values() if json.loads(data)["date"] == run["date"]]
        assert published["kind"] == kind and records.validate(published) == []
        assert {k: published[k] for k in ("command", "commit", "machine", "environment", "results")} == \
               {k: run[k] for k in ("command", "commit", "machine", "environment", "results")}
    if results_arg:
        assert sorted(p.name for p in results.iterdir()) == ["history-jax-56.json", "history-torch-56.json"]


@pytest.mark.slow
def test_a_collector_skips_a_run_without_its_record(tmp_path):
    fake_run(tmp_path / "a", "torch", "2026-12-01T10:00:00+00:00")
    for own in (tmp_path / "a").glob(f"*-{train_record.KIND}-*.json"):
        own.unlink()
    collect("distributed_table.py", tmp_path / "records", tmp_path / "a")
    assert saved_records(tmp_path / "records") == {}


def test_a_race_record_holds_its_reports_figures():
    path = ROOT / "benchmarks" / "results" / "race-fast-zen3" / "race.json"
    report = json.loads(path.read_text())
    record = records.Record(path, race_report.record(report, path))
    assert record.data["kind"] == "race" and record.data["report"] == "benchmarks/results/race-fast-zen3/race.json"
    for name, stats in report["summary"]["backends"].items():
        time = record.one("time_to_target_s", backend=name)
        assert time["value"] == stats["time_median_s"] and time["spread"]["n"] == stats["finished"]
        assert (time["spread"]["low"], time["spread"]["high"]) == (stats["time_min_s"], stats["time_max_s"])
        assert record.value("mlperf_mean_s", backend=name) == stats["olympic_mean_s"]
        assert record.value("epochs_to_target", backend=name) == stats["epochs_to_target"]["mean"]
        assert record.value("raced", backend=name) == 1


def test_a_race_out_holding_its_record_is_no_stranger(tmp_path):
    """--resume finds the record a finished sitting wrote beside race.json, and takes it for the race's own."""
    report = json.loads((ROOT / "benchmarks" / "results" / "race-fast-zen3" / "race.json").read_text())
    out = tmp_path / "out"
    out.mkdir()
    (out / "race.json").write_text(json.dumps(report))
    record = race_report.record(report)
    record["commit"] = "0" * 40
    records.write(record, out)
    with pytest.raises(ValueError, match="other settings"):  # past the strangers' check, to the settings'
        race.load_earlier(out, {**report["settings"], "target": 0.5}, resume=True)
