"""``vgg race`` end to end: a tiny race on every backend, its report checked against the evaluations it
recorded; a race that cannot finish; a contender stopped at the parity check; --resume; a killed race; bad
input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from common.core import arch, precision
from common.core.config import ModelConfig
from common.data import idx
from common.runtime import training
from common.tools import race, race_report
from helpers import ACTIVE, ROOT
from processes import alive, descendants, vgg_cli, wait_until
from tiny_data import HIDDEN, fake_files, learnable

TARGET = 0.3  # the learnable squares pass it within an epoch or two; chance is 0.1


def learnable_files(folder: Path) -> Path:
    """Four made-up IDX files a tiny model learns within an epoch or two: 96 training, 20 test images."""
    folder.mkdir(parents=True, exist_ok=True)
    (train_x, train_y), (test_x, test_y) = learnable(96, 0), learnable(20, 1)
    for name, array in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                        ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        idx.write(folder / f"{name}.gz", array.astype("uint8"))
    return folder


def race_cli(data: Path, out: Path, *options: str, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    """``vgg race`` on the tiny model at 32x32, batch 16 (6 steps an epoch), as a real subprocess."""
    paths = [str(extra_path)] if extra_path else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "common.tools.cli", "race", "--arch", "tiny", "--resize", "32",
                           "--hidden", str(HIDDEN), "--batch-size", "16", "--lr", "0.05", "--momentum", "0.9",
                           "--data-dir", str(data), "--no-verify", "--out", str(out), *options],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_race(tmp_path_factory):
    """One race of every backend this environment has, two seeds, target 0.3 within 4 epochs."""
    folder = tmp_path_factory.mktemp("race")
    options = ["--backends", ",".join(ACTIVE), "--target", str(TARGET), "--seeds", "2", "--max-epochs", "4",
               "--eval-every", "0.5"]
    proc = race_cli(learnable_files(folder / "data"), folder / "out", *options)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, options, proc, json.loads((folder / "out" / "race.json").read_text())


@pytest.mark.slow
def test_every_backend_races_and_the_report_agrees_with_its_evaluations(tiny_race):
    folder, _, proc, report = tiny_race
    assert [(r["seed"], r["backend"]) for r in report["runs"]] == [(s, n) for s in (0, 1) for n in ACTIVE]
    assert report["parity"]["refused"] == {}
    for run in report["runs"]:
        evals = run["evaluations"]
        assert run["status"] == "finished", run
        first = next(e for e in evals if e["test_acc"] >= TARGET)
        assert first is evals[-1]  # the run stopped at the first evaluation at or above the target
        assert run["time_to_target_s"] == first["wall_s"] and run["train_to_target_s"] == first["train_s"]
        assert run["epochs_to_target"] == first["epoch"] == first["steps"] / 6
        assert run["eval_to_target_s"] == pytest.approx(sum(e["eval_s"] for e in evals))
        assert [e["steps"] for e in evals] == [3 * (i + 1) for i in range(len(evals))]  # every half epoch
        walls = [e["wall_s"] for e in evals]
        assert walls == sorted(walls) and 0 < first["train_s"] < first["wall_s"]
        assert run["import_s"] > 0 and run["env"]["numpy"]
        assert f"{run['backend']:6} seed {run['seed']}: epoch" in proc.stdout  # a line per evaluation, live
    for name, stats in report["summary"]["backends"].items():
        times = sorted(r["time_to_target_s"] for r in report["runs"] if r["backend"] == name)
        assert (stats["time_min_s"], stats["time_max_s"]) == (times[0], times[-1])
        assert stats["time_median_s"] == pytest.approx(sum(times) / 2) and stats["olympic_mean_s"] is None
        epochs = [r["epochs_to_target"] for r in report["runs"] if r["backend"] == name]
        assert stats["epochs_to_target"]["mean"] == pytest.approx(sum(epochs) / 2)
    fastest = min(s["time_median_s"] for s in report["summary"]["backends"].values())
    assert min(s["vs_fastest"] for s in report["summary"]["backends"].values()) == 1.0 and fastest > 0
    assert len(report["summary"]["equivalence"]) == len(ACTIVE) * (len(ACTIVE) - 1) // 2
    md = (folder / "out" / "race.md").read_text()
    assert md.startswith(f"# vgg race: tiny at 32x32 in fp32 to test accuracy {TARGET:g}")
    assert "## Parity before the start" in md and "Conclusion:" in md and report["machine"]["cpu"] in md
    assert "Not run yet" not in md  # every run of the race ran
    for chart in race_report.CHARTS:
        assert (folder / "out" / chart).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_resume_skips_the_finished_runs(tiny_race):
    folder, options, _, report = tiny_race
    proc = race_cli(folder / "data", folder / "out", *options, "--resume")
    assert proc.returncode == 0 and "starts" not in proc.stdout, proc.stdout + proc.stderr[-2000:]
    again = json.loads((folder / "out" / "race.json").read_text())
    assert again["runs"] == report["runs"] and again["parity"] == report["parity"]


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    ([], "already holds a race (race.json); pass --resume"),
    (["--resume", "--target", "0.4"], "was run with other settings (target)"),
])
def test_an_out_holding_a_race_is_refused(tiny_race, change, message):
    folder, options, *_ = tiny_race
    before = (folder / "out" / "race.json").read_bytes()
    proc = race_cli(folder / "data", folder / "out", *options, *change)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vgg race")]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert (folder / "out" / "race.json").read_bytes() == before


@pytest.mark.slow
def test_a_stopped_race_names_the_runs_resume_would_run(tiny_race, tmp_path):
    *_, report = tiny_race
    race_report.write({**report, "runs": report["runs"][:1]}, tmp_path)
    total = 2 * len(ACTIVE)
    rest = [f"{n} seed {k}" for k in (0, 1) for n in ACTIVE][1:]
    assert f"Not run yet ({total - 1} of {total}; `--resume` runs them): {', '.join(rest)}." in \
        (tmp_path / "race.md").read_text()


@pytest.mark.slow
def test_a_race_from_another_machine_is_not_resumed(tiny_race, tmp_path):
    """Times from two CPUs do not race each other: a race recorded on another CPU is refused, left as it was."""
    folder, options, *_ = tiny_race
    out = tmp_path / "out"
    out.mkdir()
    report = json.loads((folder / "out" / "race.json").read_text())
    other = f"{report['machine']['cpu']} (another machine)"  # differs from whichever CPU runs the test
    report["machine"]["cpu"] = other
    (out / "race.json").write_text(json.dumps(report))
    before = (out / "race.json").read_bytes()
    proc = race_cli(folder / "data", out, *options, "--resume")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vgg race")]
    assert proc.returncode == 2 and len(lines) == 1 and other in lines[0], proc.stderr[-2000:]
    assert "do not race each other" in lines[0] and (out / "race.json").read_bytes() == before


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_a_race_that_cannot_finish_and_a_contender_the_parity_check_stops(tmp_path):
    """torch cannot reach 0.99 in one epoch: it did not finish, with its best accuracy. A real broken install (an
    ``mxnet`` that raises on import, first on the path) is stopped at the parity check with its reason, and
    torch races all the same (one race for both: each costs a framework's start-up)."""
    broken = tmp_path / "broken" / "mxnet"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this mxnet is broken on purpose')\n")
    proc = race_cli(learnable_files(tmp_path / "data"), tmp_path / "out", "--backends", "torch,mxnet", "--target",
                    "0.99", "--seeds", "1", "--max-epochs", "1", "--eval-every", "0.5", extra_path=tmp_path / "broken")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "race.json").read_text())
    (run,) = report["runs"]
    assert run["backend"] == "torch" and run["status"] == "did not finish" and "time_to_target_s" not in run
    assert [e["steps"] for e in run["evaluations"]] == [3, 6]  # to the last step of --max-epochs
    assert run["best_acc"] == max(e["test_acc"] for e in run["evaluations"]) < 0.99
    assert "broken on purpose" in report["parity"]["refused"]["mxnet"]
    assert "mxnet does not race: cannot load" in proc.stdout and "did not finish (best test acc" in proc.stdout
    md = (tmp_path / "out" / "race.md").read_text()
    assert "| torch | 0 / 1 | did not finish | — | — |" in md
    assert "| mxnet | — | — | — | no: cannot load" in md


@pytest.mark.slow
@pytest.mark.once
@pytest.mark.backend("torch")
def test_a_killed_race_leaves_no_run_training(tmp_path):
    """A race killed outright (SIGKILL: no handler runs; a race a script started in the background ignores
    Ctrl-C) takes its running child with it, and the report written before the kill stays for --resume."""
    out = tmp_path / "out"
    fake_files(tmp_path / "data", n_train=64, n_test=16)  # random labels: the run never reaches its target
    proc = vgg_cli("race", "--backends", "torch", "--arch", "tiny", "--resize", "32", "--hidden", str(HIDDEN),
                   "--batch-size", "16", "--target", "0.99", "--seeds", "1", "--max-epochs", "500",
                   "--data-dir", str(tmp_path / "data"), "--no-verify", "--out", str(out))
    try:
        def runs() -> list[int]:
            return [p for p in alive(descendants(proc.pid)) if "--worker" in _cmdline(p)]
        assert wait_until(lambda: bool(runs()) or proc.poll() is not None, 300), "no race run started"
        running = runs()
        assert running, proc.communicate()[1][-3000:]
    finally:
        proc.kill()
        proc.communicate()
    assert wait_until(lambda: not alive(running), 30), f"run {running} still training after its race was killed"
    assert json.loads((out / "race.json").read_text())["runs"] == []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def test_disagreeing_backends_are_refused_by_majority_and_by_the_oracle():
    """The refusal rule on parity matrices as ``parity.run`` returns them (no real backend disagrees, so the
    differences are written here): off the oracle, or off more than half of the others, a backend is refused;
    of two that disagree, neither races."""
    def cells(*pairs):
        return [[a, b, d] for a, b, d in pairs] + [[b, a, d] for a, b, d in pairs]

    ok, bad = 1e-7, 1e-2
    four = {"logits": cells(("numpy", "torch", ok), ("numpy", "tf", ok), ("numpy", "jax", ok), ("numpy", "mxnet", ok)),
            "trajectory": cells(("torch", "tf", ok), ("torch", "jax", ok), ("tf", "jax", ok),
                                ("torch", "mxnet", bad), ("tf", "mxnet", bad), ("jax", "mxnet", bad))}
    refused = race.disagreements(four, ["torch", "tf", "jax", "mxnet"], precision.bounds("fp32"))
    assert list(refused) == ["mxnet"] and "trajectory differ" in refused["mxnet"] and "1.0e-02" in refused["mxnet"]
    oracle = {"logits": cells(("numpy", "torch", ok), ("numpy", "jax", bad)), "trajectory": cells(("torch", "jax", ok))}
    assert list(race.disagreements(oracle, ["torch", "jax"], precision.bounds("fp32"))) == ["jax"]
    two = {"logits": cells(("numpy", "torch", ok), ("numpy", "jax", ok)), "trajectory": cells(("torch", "jax", bad))}
    assert sorted(race.disagreements(two, ["torch", "jax"], precision.bounds("fp32"))) == ["jax", "torch"]


def test_statistics_over_seeds_follow_mlperf_and_the_margin_rule():
    """Five runs: the median, the range and MLPerf's mean without the fastest and the slowest (a run that did
    not finish counts as the slowest); the equivalence margin never below one evaluation interval."""
    def run(backend, seed, seconds, epochs=1.0):
        done = seconds is not None
        evals = [{"wall_s": seconds or 50.0, "train_s": 1.0, "eval_s": 0.1, "epoch": epochs, "steps": 6,
                  "test_acc": 0.95 if done else 0.5}]
        return race_report.settle({"backend": backend, "seed": seed, "evaluations": evals}, 0.9)

    runs = [run("torch", s, t) for s, t in enumerate([10.0, 12.0, 11.0, 30.0, None])]
    runs += [run("jax", s, 20.0, 1.0 + s % 2) for s in range(5)]
    report = {"settings": {"backends": ["torch", "jax"], "eval_every": 0.5}, "runs": runs}
    summary = race_report.summarise(report)
    torch = summary["backends"]["torch"]
    assert (torch["time_median_s"], torch["time_min_s"], torch["time_max_s"]) == (12.0, 10.0, None)
    assert torch["olympic_mean_s"] == pytest.approx((11 + 12 + 30) / 3) and torch["did_not_finish"] == 1
    assert summary["backends"]["jax"]["vs_fastest"] == pytest.approx(20 / 12)
    (pair,) = summary["equivalence"]
    jax_std = summary["backends"]["jax"]["epochs_to_target"]["std"]
    assert pair["margin"] == pytest.approx(2 * jax_std) and pair["difference"] == pytest.approx(0.4)
    assert pair["equivalent"]


def test_a_race_run_takes_the_steps_vgg_train_takes(reference):
    """The race's own loop (evaluating once an epoch) meets the test accuracies of ``vgg.train``'s history:
    the same lr schedule, dropout seeds and shuffles."""
    train_x, train_y = learnable(96, 0)
    data = reference.from_arrays(train_x, train_y, *learnable(20, 1), batch_size=16, resize=32)
    recipe = training.Recipe(epochs=2, lr=0.05, momentum=0.9, batch_size=16, seed=3, schedule="cosine",
                             warmup_epochs=1)
    config = ModelConfig(arch.parse("tiny")[0], image_size=32, hidden=HIDDEN, seed=3)
    history = reference.train(reference.VGG(config), data, progress=False, log=lambda _: None, **asdict(recipe))
    records = []
    engine = reference.Engine(reference.VGG(config), recipe)
    race.to_target(engine, data, recipe, 2.0, 1.0, time.time(), records.append)
    assert [r["test_acc"] for r in records] == history["test_acc"]
    assert [r["epoch"] for r in records] == [1.0, 2.0]


def test_evaluation_points_are_fractions_of_an_epoch_and_the_last_step():
    assert race.evaluation_steps(6, 2, 0.5) == [3, 6, 9, 12]
    assert race.evaluation_steps(7, 1, 0.3) == [2, 4, 6, 7]
    assert race.evaluation_steps(4, 1, 0.1) == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--target", "1.5"], "--target 1.5 is not allowed: it must be a test accuracy between 0 and 1"),
    (["--target", "0"], "--target 0 is not allowed"),
    (["--seeds", "0"], "--seeds 0 is not allowed: it must be an integer >= 1"),
    (["--eval-every", "0"], "--eval-every 0 is not allowed: it must be a fraction of an epoch in (0, 1]"),
    (["--eval-every", "1.5"], "--eval-every 1.5 is not allowed"),
    (["--backends", "torch,caffe"], "unknown backend 'caffe'"),
    (["--warmup-epochs", "5", "--max-epochs", "2"], "warmup_epochs=5.0 is not allowed"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "common.tools.cli", "race", "--out", str(tmp_path / "out"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vgg")]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_out_holding_other_files_is_refused(tmp_path):
    learnable_files(tmp_path / "data")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    proc = race_cli(tmp_path / "data", tmp_path / "out", "--backends", ACTIVE[0])
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vgg race")]
    assert proc.returncode == 2 and len(lines) == 1 and "holds files that are not a race's (notes.txt)" in lines[0]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
