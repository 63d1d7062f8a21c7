"""Training in every backend on made-up data: learning, determinism, evaluation, save/load, CLI, crash safety."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from common.core.layouts import with_channels
from common.data.batches import to_float
from common.runtime import checkpoint, training
from processes import vgg_cli, wait_for_first_checkpoint
from tiny_data import HIDDEN, fake_files, learnable

ARCH = ((1, 4), (1, 8))  # two blocks: 16x16 -> 4x4x8 features, then a HIDDEN-wide head
SIZE = 16


@pytest.fixture(scope="module")
def arrays():
    return (*learnable(96, 0), *learnable(40, 1))


def small_data(vgg, arrays, batch_size=16):
    return vgg.from_arrays(*arrays, batch_size, SIZE, prefetch=0)


def fit(vgg, arrays, *, seed=0, epochs=2, dropout=0.5, batch_norm=False, **kw):
    model = vgg.VGG(ARCH, image_size=SIZE, dropout=dropout, seed=seed, batch_norm=batch_norm, hidden=HIDDEN)
    history = vgg.train(model, small_data(vgg, arrays, kw.pop("batch_size", 16)), epochs=epochs,
                        lr=kw.pop("lr", 0.05), batch_size=16, seed=seed, progress=False, log=lambda _: None, **kw)
    return model, history


def test_loss_decreases_and_history_is_complete(backend, arrays):
    _, history = fit(backend, arrays, epochs=4, momentum=0.9, lr=0.05)  # 0.9-1.0 test accuracy in every backend
    assert len(history) == 4 and history["epoch"] == [1, 2, 3, 4]
    losses = history["train_loss"]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert history["test_acc"][-1] > 0.5, history["test_acc"]  # chance is 0.1
    assert all(0 <= a <= 1 for a in history["train_acc"] + history["test_acc"])
    assert all(v > 0 for v in history["examples_per_sec"] + history["seconds"])


def test_saving_a_history_leaves_the_users_matplotlib_backend_alone(tmp_path):
    """The plot is drawn on a bare Figure, so saving in a notebook does not switch its backend to Agg."""
    import matplotlib

    from common.runtime.history import History

    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        history = History()
        history.append(epoch=1, train_loss=2.0, train_acc=0.3, test_acc=0.2, examples_per_sec=9.0, seconds=1.0)
        history.save(tmp_path)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)
    assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_is_accuracy_with_dropout_off(backend, arrays):
    model = backend.VGG(ARCH, image_size=SIZE, dropout=0.9, seed=3, hidden=HIDDEN)
    data = small_data(backend, arrays)
    first, second = backend.evaluate(model, data), backend.evaluate(model, data)
    images = with_channels(to_float(arrays[2], SIZE), backend.LAYOUT)
    expected = float(np.mean(backend.predict(model, images).argmax(1) == arrays[3]))
    assert first == second == pytest.approx(expected)


def test_test_flip_averages_each_image_and_its_mirror(backend, arrays):
    """``evaluate(..., test_flip=True)`` and an engine whose recipe asks for it: the accuracy of the mean of
    each test image's logits and its mirror image's (the width axis of the backend's layout)."""
    model = backend.VGG(ARCH, image_size=SIZE, seed=5, hidden=HIDDEN)
    data = small_data(backend, arrays)
    images = to_float(arrays[2], SIZE)
    logits = [backend.predict(model, with_channels(x, backend.LAYOUT)) for x in (images, images[:, :, ::-1])]
    assert not np.allclose(*logits)  # the mirror images do give other logits
    expected = float(np.mean(((logits[0] + logits[1]) / 2).argmax(1) == arrays[3]))
    engine = backend.Engine(model, training.Recipe(test_flip=True))
    assert backend.evaluate(model, data, test_flip=True) == engine.evaluate(data.test) == pytest.approx(expected)


def test_augmentation_and_label_smoothing_train_and_resume_as_one_run(backend, arrays, tmp_path):
    """Random crops and flips (drawn from seed and epoch) with label smoothing: a run stopped after epoch 2
    and resumed ends with the uninterrupted run's History; the checkpoint refuses another recipe."""
    recipe = dict(epochs=3, momentum=0.9, crop_padding=2, flip=True, label_smoothing=0.1, test_flip=True)
    _, straight = fit(backend, arrays, **recipe)
    assert straight["train_loss"][-1] < straight["train_loss"][0]
    fit(backend, arrays, checkpoint_dir=tmp_path, **recipe)
    checkpoint.path_for(tmp_path, 3).unlink()
    _, resumed = fit(backend, arrays, checkpoint_dir=tmp_path, resume=True, **recipe)
    np.testing.assert_allclose(resumed["train_loss"], straight["train_loss"], rtol=1e-5)
    with pytest.raises(checkpoint.CheckpointError, match=r"belongs to another run \(it differs in label_smoothing\)"):
        fit(backend, arrays, checkpoint_dir=tmp_path, resume=True, **{**recipe, "label_smoothing": 0.2})


def test_same_seed_same_history(backend, arrays):
    """Bit-identical on CPU in all four backends for a fixed thread count."""
    rows = [fit(backend, arrays, seed=s)[1] for s in (7, 7, 8)]
    columns = ("train_loss", "train_acc", "test_acc")
    assert all(rows[0][c] == rows[1][c] for c in columns)
    assert rows[0]["train_loss"] != rows[2]["train_loss"]


def test_save_load_round_trip(backend, arrays, tmp_path):
    model, _ = fit(backend, arrays, epochs=1)
    path = backend.save(model, tmp_path / f"model{backend.MODEL_SUFFIX}")
    again = backend.load(path)
    images = np.random.default_rng(0).random((5, *((1, SIZE, SIZE) if backend.LAYOUT == "NCHW"
                                                    else (SIZE, SIZE, 1))), dtype=np.float32)
    np.testing.assert_array_equal(backend.predict(again, images), backend.predict(model, images))
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


def test_checkpoints_resume_to_the_same_history(backend, arrays, tmp_path):
    """A batch-norm model, so the checkpoint must hold the running statistics too: the test accuracy (eval
    mode) and the statistics themselves come back as an uninterrupted run has them."""
    model, straight = fit(backend, arrays, epochs=3, momentum=0.9, lr=0.02, batch_norm=True)
    fit(backend, arrays, epochs=3, momentum=0.9, lr=0.02, checkpoint_dir=tmp_path, batch_norm=True)
    checkpoint.path_for(tmp_path, 3).unlink()  # as if killed during epoch 3
    again, resumed = fit(backend, arrays, epochs=3, momentum=0.9, lr=0.02, checkpoint_dir=tmp_path, resume=True,
                         batch_norm=True)
    assert resumed["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(resumed["train_loss"], straight["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(resumed["test_acc"], straight["test_acc"], rtol=1e-5)
    a, b = backend.export_weights(model), backend.export_weights(again)
    assert a["features.1.num_batches_tracked"] == b["features.1.num_batches_tracked"] == 3 * 6
    np.testing.assert_allclose(a["features.1.running_var"], b["features.1.running_var"], rtol=1e-4)


def test_damaged_checkpoint_is_refused(backend, arrays, tmp_path):
    fit(backend, arrays, epochs=1, checkpoint_dir=tmp_path)
    path = checkpoint.path_for(tmp_path, 1)
    blob = path.read_bytes()
    for damaged, message in ((blob[:len(blob) // 2], "truncated or corrupt"), (b"", "truncated"),
                             (blob[:100] + bytes([blob[100] ^ 1]) + blob[101:], "truncated or corrupt")):
        path.write_bytes(damaged)
        with pytest.raises(checkpoint.CheckpointError, match=message):
            fit(backend, arrays, epochs=2, checkpoint_dir=tmp_path, resume=True)


def test_resume_refuses_another_run(backend, arrays, tmp_path):
    fit(backend, arrays, epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="belongs to another run .*lr"):
        fit(backend, arrays, epochs=2, lr=0.01, checkpoint_dir=tmp_path, resume=True)
    arrays_, meta = checkpoint.read(checkpoint.path_for(tmp_path, 1))
    del meta["run"]["hidden"]  # as written before the width was recorded: the paper's 4096, not this run's
    checkpoint.write(tmp_path, 1, arrays_, meta)
    with pytest.raises(checkpoint.CheckpointError, match=r"belongs to another run \(it differs in hidden\)"):
        fit(backend, arrays, epochs=2, checkpoint_dir=tmp_path, resume=True)


def test_a_checkpoint_from_before_precision_resumes(backend, arrays, tmp_path):
    """A run recorded before ``precision`` was a config field ran in float32: it resumes as fp32."""
    fit(backend, arrays, epochs=1, checkpoint_dir=tmp_path)
    arrays_, meta = checkpoint.read(checkpoint.path_for(tmp_path, 1))
    del meta["run"]["precision"]
    checkpoint.write(tmp_path, 1, arrays_, meta)
    assert fit(backend, arrays, epochs=2, checkpoint_dir=tmp_path, resume=True)[1]["epoch"] == [1, 2]


def test_absurd_lr_stops_with_the_last_checkpoint_intact(backend, arrays, tmp_path):
    fit(backend, arrays, epochs=1, checkpoint_dir=tmp_path)
    state, meta = checkpoint.read(checkpoint.path_for(tmp_path, 1))
    meta["recipe"]["lr"] = 1e8  # as if epoch 1 had ended well at lr 1e8: the resumed epoch 2 diverges
    checkpoint.write(tmp_path, 1, state, meta)
    good = checkpoint.path_for(tmp_path, 1).read_bytes()
    with pytest.raises(training.TrainingDiverged, match=r"loss became (nan|inf) at epoch 2, step \d+ \(lr 1e\+08\); "
                       r"training stopped, last good checkpoint .*epoch-001.ckpt is intact"):
        fit(backend, arrays, epochs=2, lr=1e8, checkpoint_dir=tmp_path, resume=True)
    assert checkpoint.path_for(tmp_path, 1).read_bytes() == good
    assert checkpoint.list_checkpoints(tmp_path) == [checkpoint.path_for(tmp_path, 1)]


def train_args(backend_name: str, data_dir: Path, out: Path, epochs: int) -> list[str]:
    return ["train", "--backend", backend_name, "--arch", "small", "--resize", "32", "--hidden", str(HIDDEN),
            "--epochs", str(epochs), "--batch-size", "16", "--data-dir", str(data_dir), "--no-verify",
            "--out", str(out), "--no-progress"]


@pytest.mark.slow
def test_cli_trains_and_writes_its_files(backend, tmp_path):
    name = backend.__name__.removeprefix("vgg_")
    fake_files(tmp_path / "data")
    proc = vgg_cli(*train_args(name, tmp_path / "data", tmp_path / "run", 2))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "epoch 2/2: loss " in out and "examples/sec" in out
    for file in ("history.json", "history.csv", "history.png", f"model{backend.MODEL_SUFFIX}", "run.json"):
        assert (tmp_path / "run" / file).is_file(), file
    assert json.loads((tmp_path / "run" / "history.json").read_text())["rows"][-1]["epoch"] == 2
    again = vgg_cli(*train_args(name, tmp_path / "data", tmp_path / "run", 2))
    _, err = again.communicate(timeout=300)
    assert again.returncode == 2 and "already holds a run" in err and "Traceback" not in err


@pytest.mark.slow
def test_killed_run_resumes(backend, tmp_path):
    """SIGKILL a real training process right after its first checkpoint; --resume finishes the run."""
    name = backend.__name__.removeprefix("vgg_")
    fake_files(tmp_path / "data", n_train=400)
    args = train_args(name, tmp_path / "data", tmp_path / "run", 3)
    proc = vgg_cli(*args)
    first = wait_for_first_checkpoint(proc, tmp_path / "run" / "checkpoints")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert first.exists(), "the run died before writing its first checkpoint"
    done = checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")
    resumed = vgg_cli(*args, "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resumed from {done[-1]}" in out
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [row["epoch"] for row in history["rows"]] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--backend", "caffe"], "invalid choice: 'caffe'"),
    (["--backend", "torch", "--arch", "vgg11", "--resize", "16"], "smallest resolution"),
    pytest.param(["--backend", "torch", "--out", "/proc/forbidden"], "is not writable",
                 marks=pytest.mark.backend("torch")),
    (["--backend", "torch", "--lr", "-1"], "--lr -1 is not allowed: it must be a finite number above 0"),
    (["--backend", "torch", "--hidden", "0"], "--hidden 0 is not allowed: it must be an integer >= 1"),
    (["--backend", "torch", "--crop-padding", "9"],
     "--crop-padding 9 is not allowed: it must be an integer from 0 to 8"),
    (["--backend", "torch", "--label-smoothing", "1"],
     "--label-smoothing 1 is not allowed: it must be a number in [0, 1)"),
])
def test_cli_bad_arguments_are_one_line(args, message, tmp_path):
    full = ["train", "--out", str(tmp_path / "run"), *args] if "--out" not in args else ["train", *args]
    proc = vgg_cli(*full)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and message in err and "Traceback" not in err, err
