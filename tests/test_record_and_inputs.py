"""What a run records and what the tools take in: run.json written only once a run has started, an earlier
run refused unless resumed or overwritten, one run per folder, default export names, file modes, every
option checked before anything is written, and image files read in bounded memory, in the listed formats."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.core import atomic
from common.core.config import MAX_IMAGE_SIZE, MAX_SEED
from common.runtime import checkpoint, run_folder, training
from common.serving import image_files
from common.tools import cli
from helpers import ROOT
from processes import vgg_cli
from tiny_data import HIDDEN, fake_files

Image = pytest.importorskip("PIL.Image")
torch_only = pytest.mark.backend("torch")  # the cheapest backend stands for all four: the guard is shared code


def train_args(data: Path, out: Path, *more: str) -> list[str]:
    """A one-epoch torch run of the small arch at 32x32 on made-up data."""
    return ["train", "--backend", "torch", "--arch", "small", "--resize", "32", "--hidden", str(HIDDEN),
            "--epochs", "1", "--batch-size", "8", "--data-dir", str(data), "--no-verify", "--no-progress",
            "--out", str(out), *more]


def run(*args: str, timeout: float = 300) -> tuple[int, str]:
    """``vgg ...`` in a subprocess: (exit status, stderr)."""
    proc = vgg_cli(*args)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def one_line(err: str, message: str) -> None:
    """``err`` is one line holding ``message``, with no traceback."""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, a finished one-epoch run); tests copy the run rather than change it."""
    root = tmp_path_factory.mktemp("trained")
    fake_files(root / "data")
    code, err = run(*train_args(root / "data", root / "run"))
    assert code == 0, err
    return root / "data", root / "run"


def copy_of(run_dir: Path, to: Path) -> Path:
    return Path(shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns(run_folder.LOCK)))


def run_files(out: Path) -> dict[str, bytes]:
    """The files of a run folder, name -> bytes, less the lock (which each run that takes it rewrites)."""
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != run_folder.LOCK}


T = ["train", "--backend", "torch"]
BAD = [
    (["--weight-decay", "inf"], "--weight-decay inf is not allowed: it must be a finite number >= 0"),
    (["--weight-decay", "nan"], "--weight-decay nan is not allowed"),
    (["--weight-decay", "-0.1"], "--weight-decay -0.1 is not allowed"),
    (["--lr", "inf"], "--lr inf is not allowed: it must be a finite number above 0"),
    (["--lr", "0"], "--lr 0 is not allowed"),
    (["--seed", "-1"], f"--seed -1 is not allowed: it must be an integer from 0 to {MAX_SEED}"),
    (["--seed", str(2**64)], f"--seed {2**64} is not allowed"),
    (["--momentum", "1"], "--momentum 1 is not allowed: it must be a number in [0, 1)"),
    (["--warmup-epochs", "nan"], "--warmup-epochs nan is not allowed"),
    (["--epochs", "0"], "--epochs 0 is not allowed: it must be an integer >= 1"),
    (["--batch-size", "-8"], "--batch-size -8 is not allowed"),
    (["--limit", "0"], "--limit 0 is not allowed"),
    (["--threads", "0"], "--threads 0 is not allowed"),
    (["--devices", "0"], "--devices 0 is not allowed"),
    (["--port", "0"], "--port 0 is not allowed: it must be an integer from 1 to 65535"),
    (["--port", "65536"], "--port 65536 is not allowed"),
    (["--resize", "100000"], f"--resize 100000 is not allowed: it must be an integer from 1 to {MAX_IMAGE_SIZE}"),
    (["--resume", "--overwrite"], "not allowed with argument"),
]


CASES = [(T + args, m) for args, m in BAD] + [
    (["compare", "--seconds", "nan"], "--seconds nan is not allowed"),
    (["compare", "--seconds", "inf"], "--seconds inf is not allowed"),
    (["compare", "--seconds", "-1"], "--seconds -1 is not allowed"),
    (["compare", "--train-epochs", "-1"], "--train-epochs -1 is not allowed: it must be an integer >= 0"),
    (["compare", "--workers", "1,0"], "--workers 0 is not allowed"),
    (["compare", "--resize", "224,5000"], "--resize 5000 is not allowed"),
    (["parity", "--batch", "0"], "--batch 0 is not allowed"),
    (["parity", "--steps", "-1"], "--steps -1 is not allowed"),
    (["summary", "--resize", "100000"], "--resize 100000 is not allowed"),
    (["predict", "--model", "m.pt", "--top", "0", "a.png"], "--top 0 is not allowed"),
]


def with_out(argv: list[str], folder: Path) -> list[str]:
    """``argv`` with an ``--out`` in ``folder`` where the command writes one."""
    return [*argv, "--out", str(folder / "out")] if argv[0] in ("train", "compare") else argv


@pytest.mark.parametrize("argv, message", CASES)
def test_bad_values_are_one_line_before_anything_is_written(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(with_out(argv, tmp_path))
    assert exit_.value.code == 2
    one_line(capsys.readouterr().err, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("argv, message", [CASES[0], CASES[-3], CASES[-1]])
def test_a_bad_value_is_one_line_from_the_real_command(argv, message, tmp_path):
    code, err = run(*with_out(argv, tmp_path))
    assert code == 2
    one_line(err, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, arch", [
    (["train", "--backend", "torch", "--out", "x"], "small"), (["parity"], "small"), (["compare"], "small"),
    (["race"], "small"), (["summary"], "vgg11"),
])
def test_each_command_has_its_own_default_arch(argv, arch):
    """summary's VGG-11 default must not leak into the commands that train the book's small VGG (argparse
    shares a parent's actions between sub-commands)."""
    assert cli.parser().parse_args(argv).arch == arch


def test_the_python_api_checks_the_same_values():
    assert training.Recipe(seed=MAX_SEED).seed == MAX_SEED
    for field, value in (("seed", MAX_SEED + 1), ("seed", -1), ("weight_decay", float("inf")), ("lr", float("nan")),
                         ("momentum", 1.0), ("warmup_epochs", float("nan"))):
        with pytest.raises(ValueError, match=f"^{field}="):
            training.Recipe(**{field: value})


@pytest.mark.slow
@torch_only
def test_a_refused_resume_leaves_run_json_as_it_was(trained, tmp_path):
    data, done = trained
    out = copy_of(done, tmp_path / "run")
    before = (out / "run.json").read_bytes()
    code, err = run(*train_args(data, out, "--resume", "--lr", "0.01"))
    assert code == 2
    one_line(err.splitlines()[-1], "belongs to another run (it differs in lr)")
    assert (out / "run.json").read_bytes() == before


@pytest.mark.slow
@torch_only
def test_an_earlier_run_is_refused_and_overwrite_replaces_it(trained, tmp_path):
    data, done = trained
    out = copy_of(done, tmp_path / "run")
    shutil.rmtree(out / "checkpoints")  # the model, history and record are still an earlier run's
    (out / "model.weights.h5").write_bytes(b"a tf run's model")
    files = run_files(out)
    code, err = run(*train_args(data, out, "--seed", "3"))
    assert code == 2
    one_line(err.splitlines()[-1], f"--out {out} already holds a run (history.csv, history.json, history.png, "
                                   "model.pt, model.weights.h5, run.json); pass --resume to continue it, --overwrite")
    assert run_files(out) == files
    code, err = run(*train_args(data, out, "--seed", "3", "--overwrite"))
    assert code == 0, err
    assert '"seed": 3' in (out / "run.json").read_text() and not (out / "model.weights.h5").exists()
    assert checkpoint.list_checkpoints(out / "checkpoints") == [checkpoint.path_for(out / "checkpoints", 1)]


@pytest.mark.slow
@torch_only
def test_a_second_run_on_a_held_out_fails_at_once(trained, tmp_path):
    data, _ = trained
    out = tmp_path / "run"
    first = vgg_cli(*train_args(data, out, "--epochs", "1000"))
    try:
        deadline = time.monotonic() + 120
        while first.poll() is None and time.monotonic() < deadline and \
                not (out / "checkpoints" / run_folder.LOCK).exists():  # the chief holds --out, then trains
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[1]
        began = time.monotonic()
        code, err = run(*train_args(data, out, "--overwrite"))
        assert code == 2 and time.monotonic() - began < 60
        one_line(err, f"--out {out} is in use by another run (pid {first.pid})")
        assert first.poll() is None  # untouched: still training
    finally:
        first.kill()
        first.communicate()


def test_a_lock_is_one_holder_at_a_time(tmp_path):
    with run_folder.locked(tmp_path, "the folder"):
        held = f"the folder is in use by another run \\(pid {os.getpid()}\\)"
        with pytest.raises(run_folder.FolderInUse, match=held):
            with run_folder.locked(tmp_path, "the folder"):
                pass
    with run_folder.locked(tmp_path, "the folder"):  # released at the end of the block
        pass


@torch_only
def test_the_python_api_refuses_an_earlier_runs_checkpoints(tmp_path):
    from helpers import load_backend
    vgg = load_backend("torch")
    images = np.random.default_rng(0).integers(0, 255, (32, 28, 28), dtype=np.uint8)
    labels = np.arange(32) % 10
    data = vgg.from_arrays(images, labels, images[:8], labels[:8], 16, 16, prefetch=0)

    def train(**kw):
        model = vgg.VGG(((1, 4),), image_size=16, hidden=HIDDEN)
        return vgg.train(model, data, epochs=1, batch_size=16, checkpoint_dir=tmp_path, progress=False,
                         log=lambda _: None, **kw)

    started = []
    train(on_start=started.append)
    assert started == [0]
    with pytest.raises(checkpoint.CheckpointError, match="holds an earlier run's checkpoints .*overwrite=True"):
        train(seed=1)
    with pytest.raises(ValueError, match="exclude each other"):
        train(resume=True, overwrite=True)
    with pytest.raises(checkpoint.CheckpointError, match="belongs to another run"):
        train(seed=1, resume=True, on_start=started.append)
    assert started == [0]  # a refused resume never started
    train(seed=1, overwrite=True)
    assert checkpoint.read(checkpoint.path_for(tmp_path, 1))[1]["recipe"]["seed"] == 1


def test_default_export_names_come_from_the_model_file():
    folder = Path("runs/a")
    assert cli._beside(folder / "model.pt", ".pt2") == folder / "model.pt2"
    assert cli._beside(folder / "small.safetensors", ".onnx") == folder / "small.onnx"
    assert cli._beside(folder / "wide.safetensors", ".onnx") == folder / "wide.onnx"
    assert cli._beside(folder / "model.weights.h5", ".savedmodel") == folder / "model.savedmodel"
    assert cli._beside(folder / ".safetensors", ".onnx") == folder / "model.onnx"


def test_atomic_writes_keep_the_umask(tmp_path):
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        old = os.umask(umask)
        try:
            written = atomic.write_text(tmp_path / f"{umask:o}.json", "{}")
            by_library = atomic.write_with(tmp_path / f"{umask:o}.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
        finally:
            os.umask(old)
        assert (written.stat().st_mode & 0o777, by_library.stat().st_mode & 0o777) == (mode, mode)


#: a child process: by how much reading and resizing argv[1] to 32x32 raised its peak RSS (KiB)
MEASURED_READ = """
import resource, sys
import numpy as np
from common.serving import image_files
image_files.to_input([np.zeros((28, 28), np.uint8)], 32, "NCHW")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
x = image_files.to_input([image_files.read(sys.argv[1], 1, 32)], 32, "NCHW")
assert x.shape == (1, 1, 32, 32) and np.isfinite(x).all()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 1_000_000), (1_000_000, 1)])
def test_a_huge_image_is_read_in_bounded_memory(shape, tmp_path):
    path = tmp_path / "line.png"
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)
    assert path.stat().st_size < 4096  # a few kilobytes of PNG; resized whole, a 128 MB matrix
    grew = subprocess.run([sys.executable, "-c", MEASURED_READ, str(path)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert int(grew.stdout) < 50 * 1024, f"peak RSS grew {int(grew.stdout) / 1024:.0f} MB"


def test_a_shrunk_image_stays_close_to_the_loaders_resize(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 600).astype(np.uint8), (500, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    pixels = image_files.read(tmp_path / "ramp.png", 1, 32)
    assert pixels.shape == (125, 120)  # no side above 4 x 32
    shrunk = image_files.to_input([pixels], 32, "NCHW")
    whole = image_files.to_input([ramp], 32, "NCHW")
    assert np.abs(shrunk - whole).max() < 0.01


@pytest.mark.parametrize("fmt", ["ICO", "PCX"])
def test_only_the_listed_formats_are_opened(fmt, tmp_path):
    path = tmp_path / "fake.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(path, format=fmt)
    with pytest.raises(image_files.ImageError, match="cannot be decoded as BMP, GIF, JPEG, PNG, TIFF, WEBP"):
        image_files.read(path)


@pytest.mark.slow
@torch_only
def test_vgg_predict_refuses_an_unlisted_format_in_one_line(trained, tmp_path):
    path = tmp_path / "icon.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(path, format="ICO")
    code, err = run("predict", "--model", str(trained[1] / "model.pt"), str(path))
    assert code == 2
    one_line(err, f"{path}: cannot be decoded as BMP, GIF, JPEG, PNG, TIFF, WEBP (the formats read)")
