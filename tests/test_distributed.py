"""Data parallelism in every backend with real worker processes on loopback: one process and the
framework's engine agree, a distributed run checkpoints once, listens on loopback only and resumes, a killed
or hung worker ends the job, workers import only the project, bad set-ups are refused in one line, and no
process outlives the launcher."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.core import arch, backends, tolerances
from common.core.config import ModelConfig
from common.data.batches import Batches
from common.runtime import checkpoint, distributed
from common.tools import parity_distributed
from helpers import COMPARED, ROOT, load_backend
from processes import ListenerWatch, alive, descendants, is_loopback, vgg_cli, wait_for_first_checkpoint, wait_until
from tiny_data import HIDDEN, fake_files

#: seconds within which the processes of an ended job must be gone (the launcher kills them as it ends)
GONE_WITHIN = 10


def name_of(backend) -> str:
    return backend.__name__.removeprefix("vgg_")


def train_args(name: str, data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return ["train", "--backend", name, "--arch", "tiny", "--resize", "32", "--hidden", str(HIDDEN),
            "--epochs", str(epochs), "--batch-size", "16", "--data-dir", str(data), "--no-verify", "--out", str(out),
            "--no-progress", "--workers", "2", *extra]


def worker_pid(launcher: int, rank: int) -> int | None:
    """The worker process of ``rank`` under the launcher, found by the variables its launcher set."""
    wanted = {f"RANK={rank}", f"VGG_LAUNCH_RANK={rank}"}
    for pid in descendants(launcher):
        try:
            env = set(Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0"))
        except OSError:
            continue
        if env & wanted and "VGG_LAUNCHED=1" in env and "common.tools.cli" in Path(f"/proc/{pid}/cmdline").read_text():
            return pid
    return None


def test_batches_shards_are_one_process_batches_in_order():
    images = np.zeros((40, 28, 28), np.uint8) + np.arange(40, dtype=np.uint8)[:, None, None]
    whole = Batches(images, np.arange(40), batch_size=8, shuffle=True, seed=3, prefetch=0)
    halves = [whole.sharded(r, 2) for r in range(2)]
    for full, a, b in zip(whole.epoch(1), halves[0].epoch(1), halves[1].epoch(1)):
        np.testing.assert_array_equal(np.concatenate([a[1], b[1]]), full[1])


@pytest.mark.parametrize("replicas, batch, examples, message", [
    (3, 16, 64, "not divisible by 3"), (2, 16, 65, "last batch of an epoch has 1"), (32, 16, 64, "more than")])
def test_split_that_cannot_be_equal_is_refused(replicas, batch, examples, message):
    with pytest.raises(distributed.DistributedError, match=message):
        distributed.check_split(replicas, batch, examples)


@pytest.fixture(scope="module")
def parity_report():
    """``vgg parity --workers 2`` of one backend (tiny arch), run once per backend for this module."""
    done: dict[str, dict] = {}

    def report(name: str) -> dict:
        if name not in done:
            done[name] = parity_distributed.run([name], ModelConfig(arch.TINY, image_size=32, hidden=HIDDEN), 2,
                                                log=lambda _: None)
        return done[name]
    return report


@pytest.mark.slow
def test_engine_matches_one_process(backend, parity_report):
    """1 vs 2 processes (and 1 vs 2 devices in one process) after 3 SGD steps with momentum and a changing lr."""
    name = name_of(backend)
    runs = parity_report(name)["engines"][name]
    assert set(runs) == ({"2 processes", "2 devices"} if backends.BACKENDS[name].in_process_devices
                         else {"2 processes"})
    for label, diff in runs.items():
        assert isinstance(diff, float), f"{label}: {diff}"
        assert diff <= parity_distributed.TOLERANCE, (label, diff)


@pytest.mark.slow
@pytest.mark.parametrize("name", COMPARED)
def test_workers_follow_torchs_trajectory(name, parity_report):
    """The 2-process runs of every framework, MXNet included (issue 24), end where torch DDP's do: momentum
    is torch.optim.SGD's in all four under the changing lr. The matrix of `vgg parity --workers` (torch's own
    runs are the reference, not a case)."""
    load_backend(name)
    load_backend("torch")
    ours, reference = (parity_report(n)["trajectories"].get(n) for n in (name, "torch"))
    assert ours is not None and reference is not None, parity_report(name)["engines"]
    diff = tolerances.relative_tree(reference, ours)
    assert diff <= tolerances.TOLERANCES["trajectory"], f"{name} vs torch: {diff:.1e}"


@pytest.mark.slow
def test_killed_worker_stops_the_job_and_resume_finishes_it(backend, tmp_path):
    """The uninterrupted run listens only inside a network of its own (loopback only where the kernel has no
    namespaces for it; TensorFlow, which cannot, says so). Rank 1 gets
    SIGKILL after the first checkpoint: the job ends non-zero naming it, no process is left, only rank 0's
    complete checkpoints exist, and --resume ends with the uninterrupted run's History."""
    name = name_of(backend)
    fake_files(tmp_path / "data", n_train=96, n_test=16)
    straight = vgg_cli(*train_args(name, tmp_path / "data", tmp_path / "straight", 3))
    watch = ListenerWatch(straight.pid, descendants)
    out, err = straight.communicate(timeout=600)
    listeners = watch.stop()
    assert straight.returncode == 0, err
    if "no private network for the workers" in err and name == "tf":  # no namespaces for this user here
        assert "[::] and 0.0.0.0" in err and "--devices 2" in err, err
    elif "no private network for the workers" in err:
        assert listeners and all(is_loopback(address) for address, *_ in listeners), listeners
    else:  # TensorFlow's gRPC server binds every interface whatever TF_CONFIG says: of a namespace of its own
        assert listeners, "no listening socket seen during a 2-worker run"
        assert all(private or is_loopback(address) for address, _, private in listeners), listeners
        assert all(private for *_, private in listeners), "the workers share this machine's network"
    assert not alive(descendants(straight.pid))
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "straight" / "checkpoints")] == \
        ["epoch-002.ckpt", "epoch-003.ckpt"]
    assert "[rank 0] epoch 3/3" in out and "[rank 1] epoch" not in out
    model = backend.load(tmp_path / "straight" / f"model{backend.MODEL_SUFFIX}")  # the ordinary load
    assert backend.parameter_count(model) > 0

    args = train_args(name, tmp_path / "data", tmp_path / "run", 3)
    proc = vgg_cli(*args)
    first = wait_for_first_checkpoint(proc, tmp_path / "run" / "checkpoints")
    assert first.exists(), f"no checkpoint of epoch 1 before the job ended (status {proc.poll()})"
    victim = worker_pid(proc.pid, 1)
    assert victim is not None, "rank 1 not found"
    everyone = descendants(proc.pid)
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)  # the launcher ends the job rather than waiting on a dead peer
    assert proc.returncode not in (0, None)
    assert f"worker rank 1 (pid {victim}) was killed by SIGKILL" in err.splitlines()[-1], err[-2000:]
    assert wait_until(lambda: not alive(everyone), GONE_WITHIN), f"processes outlived the launcher: {alive(everyone)}"
    for path in checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints"):
        checkpoint.read(path)  # complete, or it raises
    resumed = vgg_cli(*args, "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    rows = [json.loads((tmp_path / d / "history.json").read_text())["rows"] for d in ("straight", "run")]
    for column in ("train_loss", "train_acc", "test_acc"):
        np.testing.assert_allclose([r[column] for r in rows[1]], [r[column] for r in rows[0]], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_ctrl_c_leaves_no_process(tmp_path):
    fake_files(tmp_path / "data", n_train=400, n_test=16)
    proc = vgg_cli(*train_args("torch", tmp_path / "data", tmp_path / "run", 50))
    deadline = time.monotonic() + 120
    while worker_pid(proc.pid, 1) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    everyone = descendants(proc.pid)
    assert everyone
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert wait_until(lambda: not alive(everyone), GONE_WITHIN), alive(everyone)


def bad(*args: str, data: Path, out: Path) -> tuple[int, str]:
    proc = vgg_cli("train", "--arch", "tiny", "--resize", "32", "--hidden", str(HIDDEN), "--batch-size", "16",
                   "--data-dir", str(data), "--no-verify", "--out", str(out), *args)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--backend", "torch", "--workers", "3"], "--batch-size 16 is not divisible by 3"),
    (["--backend", "jax", "--workers", "2", "--devices", "16"], "32 workers x devices is more than the batch"),
    (["--backend", "torch", "--workers", "0"], "--workers 0 is not allowed"),
    (["--backend", "torch", "--devices", "2"], "torch: --devices 2 is not supported"),
    (["--backend", "tf", "--workers", "2", "--devices", "2"], "tf: --devices with --workers on CPU"),
    pytest.param(["--backend", "torch", "--workers", "2", "--device", "gpu"], "torch: --device gpu but no GPU",
                 marks=pytest.mark.backend("torch")),
    pytest.param(["--backend", "mxnet", "--device", "gpu"], "MXNet's pip wheel is CPU-only",
                 marks=pytest.mark.backend("mxnet")),
])
def test_bad_setups_are_one_line_and_write_nothing(args, message, tmp_path):
    fake_files(tmp_path / "data", n_train=64, n_test=16)
    code, err = bad(*args, data=tmp_path / "data", out=tmp_path / "run")
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_busy_port_is_refused(tmp_path):
    fake_files(tmp_path / "data", n_train=64, n_test=16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, err = bad("--backend", "jax", "--workers", "2", "--port", str(port), data=tmp_path / "data",
                        out=tmp_path / "run")
    assert code == 2 and f"--port {port} on 127.0.0.1 is not free" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.once
@pytest.mark.slow
@pytest.mark.backend("torch")
def test_hung_worker_stops_the_job_naming_it(tmp_path):
    """Rank 1 stopped (alive, silent) after the first checkpoint: the launcher ends the job after
    --stall-timeout, names rank 1 among the silent, and leaves no process behind."""
    fake_files(tmp_path / "data", n_train=400, n_test=16)
    proc = vgg_cli(*train_args("torch", tmp_path / "data", tmp_path / "run", 50, "--stall-timeout", "10"))
    if not wait_for_first_checkpoint(proc, tmp_path / "run" / "checkpoints").exists():
        pytest.fail(f"no first checkpoint; the job ended with {proc.poll()}: {proc.communicate()[1][-3000:]}")
    victim = worker_pid(proc.pid, 1)
    everyone = descendants(proc.pid)
    os.kill(victim, signal.SIGSTOP)
    _, err = proc.communicate(timeout=120)
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 1 and "no worker made progress for 10 s (--stall-timeout)" in last, err[-2000:]
    assert f"rank 1 (pid {victim})" in last, last
    assert wait_until(lambda: not alive(everyone), GONE_WITHIN), alive(everyone)


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_workers_ignore_the_working_folder_and_a_closed_pipe(tmp_path):
    """Run from a folder holding a planted ``common`` package, with its output read by a reader that quits
    after the first line (``vgg train ... | head -1``): the workers import the installed project (no marker),
    and the job still finishes."""
    fake_files(tmp_path / "data", n_train=96, n_test=16)
    planted = tmp_path / "cwd" / "common" / "tools"
    planted.mkdir(parents=True)
    marker = tmp_path / "planted-module-ran"
    for package in (planted.parent, planted):
        (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "cli.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = train_args("torch", tmp_path / "data", tmp_path / "run", 2)
    args.remove("--no-progress")  # progress bars: more output into the closed pipe
    # `-P` as the installed `vgg` script runs: its own folder, not the working one, on sys.path
    proc = subprocess.Popen([sys.executable, "-P", "-m", "common.tools.cli", *args], cwd=tmp_path / "cwd", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("vgg train: torch on 2 worker processes")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err[-2000:]
    assert not marker.exists(), "a worker imported a module from the working folder"
    assert (tmp_path / "run" / "model.pt").exists()
