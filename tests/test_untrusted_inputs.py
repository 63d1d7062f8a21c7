"""Untrusted inputs besides a model's code (issue 34): an ONNX graph that would allocate without bound, an
image whose header promises more pixels than memory holds, file names that would forge result lines or reach
the terminal as escape codes, a checkpoint whose meta lies, and an empty PYTHONPATH entry. Each is refused in
one line before anything big is allocated or any file written; the crafted files are real attacks (ONNX
Runtime given the first would try to allocate 256 GiB when it folds constants)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from common.core import arch
from common.runtime import checkpoint, run_folder
from common.serving import formats, image_files, onnx_files
from common.tools import cli, launch, predict, records
from common.tools.models import Opened
from helpers import ACTIVE, ROOT, load_backend
from hostile import error
from processes import run_measured, vgg_cli
from tiny_data import HIDDEN, fake_files

onnx = pytest.importorskip("onnx")
Image = pytest.importorskip("PIL.Image")
from onnx import TensorProto, helper  # noqa: E402  (after the skip: onnx is an optional extra)

torch_only = pytest.mark.backend("torch")  # the cheapest backend stands for all four: the guards are shared code
SIZE = 32


def our_error(err: str) -> str:
    """The one line of a real process's stderr that is ours, which must end it, with no traceback (a framework
    may log its start-up chatter before it)."""
    ours = [line for line in err.splitlines() if line.startswith("vgg ")]
    assert len(ours) == 1 and err.strip().endswith(ours[0]) and "Traceback" not in err, err[-3000:]
    return ours[0]


# --- ONNX graphs that would allocate without bound ------------------------------------------------------

def const(name: str, values, dtype=TensorProto.INT64) -> TensorProto:
    return helper.make_tensor(name, dtype, [len(values)], values)


def data_shape() -> list:
    """Nodes making ``n`` an int64 (1,) tensor whose value is read from the input pixels: a size that no
    inference can know before the model runs."""
    return [helper.make_node("ReduceMax", ["images"], ["n_max"], keepdims=0),
            helper.make_node("Cast", ["n_max"], ["n_int"], to=TensorProto.INT64),
            helper.make_node("Reshape", ["n_int", "one_axis"], ["n"])]


def onnx_file(path: Path, nodes: list, initializers: list = (), value_info: list = ()) -> Path:
    """An ONNX classifier of (batch, 1, 28, 28) ``images`` into (batch, 10) ``logits`` in which ``nodes``
    make a float tensor ``bomb`` that flows into the logits (summed), as a real attack hides its payload."""
    head = [helper.make_node("Flatten", ["images"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["base"]),
            helper.make_node("ReduceSum", ["bomb"], ["total"], keepdims=0),
            helper.make_node("Add", ["base", "total"], ["logits"])]
    weights = [helper.make_tensor("w", TensorProto.FLOAT, [784, 10], np.zeros(7840, np.float32)),
               const("one_axis", [1])]
    graph = helper.make_graph(
        [*nodes, *head], "crafted",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [*weights, *(t for t in initializers if isinstance(t, TensorProto))], value_info=list(value_info),
        sparse_initializer=[t for t in initializers if isinstance(t, onnx.SparseTensorProto)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _sliced(name: str) -> list:
    """``name``: the input's first n pixels (n read from the data), unsqueezed at ``{name}_axes``: (n, 1) or
    (1, n)."""
    return [helper.make_node("Flatten", ["images"], [f"{name}_flat"], axis=0),
            helper.make_node("Slice", [f"{name}_flat", "zero", "n", "one_axis"], [f"{name}_row"]),
            helper.make_node("Squeeze", [f"{name}_row", "zero"], [f"{name}_v"]),
            helper.make_node("Unsqueeze", [f"{name}_v", f"{name}_axes"], [name])]


def _if_node() -> list:
    """``bomb`` made by an If on the pixels, both of whose branches (subgraphs) give a constant."""
    branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value_floats=[1.0])], "branch", [],
                               [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])])
    return [helper.make_node("ReduceMax", ["images"], ["m"], keepdims=0),
            helper.make_node("Cast", ["m"], ["cond"], to=TensorProto.BOOL),
            helper.make_node("If", ["cond"], ["bomb"], then_branch=branch, else_branch=branch)]


#: name -> (nodes, initializers, value_info, what the refusal says)
CRAFTED = {
    "constant-of-shape": ([helper.make_node("ConstantOfShape", ["huge"], ["bomb"])], [const("huge", [2**36])], [],
                          "tensor 'bomb' of shape (68719476736,) would take 256.0 GiB, above the 1.0 GiB"),
    "pad": ([helper.make_node("Pad", ["images", "pads"], ["bomb"])], [const("pads", [0, 0, 0, 0, 0, 0, 10**5, 10**5])],
            [], "tensor 'bomb' of shape (1, 1, 100028, 100028) would take 37.3 GiB"),
    "huge-weights": ([helper.make_node("Identity", ["big"], ["bomb"])],  # dims that the file holds no data for
                     [TensorProto(name="big", data_type=TensorProto.DOUBLE, dims=[2**28])], [],
                     "tensor 'big' of shape (268435456,) would take 2.0 GiB"),
    # one value said to stand in a tensor of 2**30 floats: ORT would make it dense on loading the file
    "sparse-weights": ([helper.make_node("Identity", ["sparse"], ["bomb"])],
                       [helper.make_sparse_tensor(helper.make_tensor("sparse", TensorProto.FLOAT, [1], [1.0]),
                                                  const("sparse_at", [7]), [2**30])], [],
                       "tensor 'sparse' of shape (1073741824,) would take 4.0 GiB"),
    "expand-from-data": ([*data_shape(), helper.make_node("Expand", ["one", "n"], ["bomb"])],
                         [const("one", [1.0], TensorProto.FLOAT)], [],
                         "op Expand makes tensor 'bomb' of a size read from data at run time"),
    "tile-from-data": ([*data_shape(), helper.make_node("Tile", ["one", "n"], ["bomb"])],
                       [const("one", [1.0], TensorProto.FLOAT)], [], "op Tile makes tensor 'bomb'"),
    "range-from-data": ([*data_shape(), helper.make_node("Squeeze", ["n"], ["n0"]),
                         helper.make_node("Cast", ["n0"], ["limit"], to=TensorProto.FLOAT),
                         helper.make_node("Range", ["zero_f", "limit", "one_f"], ["bomb"])],
                        [helper.make_tensor("zero_f", TensorProto.FLOAT, [], [0.0]),
                         helper.make_tensor("one_f", TensorProto.FLOAT, [], [1.0])], [],
                        "op Range makes tensor 'bomb'"),
    # the file states a small shape for its ConstantOfShape: the check infers shapes itself
    "forged-shape": ([*data_shape(), helper.make_node("ConstantOfShape", ["n"], ["bomb"])], [],
                     [helper.make_tensor_value_info("bomb", TensorProto.FLOAT, [1])],
                     "op ConstantOfShape makes tensor 'bomb'"),
    # slices of data-chosen length are bounded by the input; their (n, 1) + (1, n) broadcast is n squared
    "broadcast-from-data": ([*data_shape(), *_sliced("col"), *_sliced("row"),
                             helper.make_node("Add", ["col", "row"], ["bomb"])],
                            [const("zero", [0]), const("col_axes", [1]), const("row_axes", [0])], [],
                            "op Add makes tensor 'bomb'"),
    "subgraph": (_if_node(), [], [], "op If runs a subgraph"),
}


@pytest.mark.parametrize("name", CRAFTED)
def test_an_onnx_graph_that_would_allocate_without_bound_is_refused(name, tmp_path):
    nodes, initializers, value_info, message = CRAFTED[name]
    path = onnx_file(tmp_path / f"{name}.onnx", nodes, initializers, value_info)
    with pytest.raises(formats.ModelFileError) as refused:
        onnx_files.check_graph(path)
    text = str(refused.value)
    assert text.startswith(f"{path}: not loaded: ") and message in text and "\n" not in text, text


def test_onnx_data_in_another_file_is_refused_before_onnx_runtime_reads_it(tmp_path):
    """ORT would read ``location`` (any file on this machine) into the weights: the session is never made."""
    pytest.importorskip("onnxruntime")
    path = onnx_file(tmp_path / "external.onnx", [helper.make_node("Identity", ["x"], ["bomb"])],
                     [helper.make_tensor("x", TensorProto.FLOAT, [4], np.zeros(4, np.float32))])
    model = onnx.load(str(path))
    weight = next(t for t in model.graph.initializer if t.name == "x")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="/etc/passwd\n")
    onnx.save(model, str(path))
    with pytest.raises(formats.ModelFileError, match="keeps its data in another file \\('/etc/passwd\\\\n'\\)"):
        onnx_files.session(path)


@pytest.mark.parametrize("name", ACTIVE)
def test_our_onnx_exports_pass_the_graph_check(name, tmp_path):
    """Every backend's export of a VGG with batch norm (tests/test_export.py's exports, which session() checks,
    have LRN and a 1x1 convolution): JAX's slices of computed bounds keep an unknown shape, which the check
    allows, as a slice cannot grow."""
    vgg = load_backend(name)
    model = vgg.VGG(arch.TINY, image_size=SIZE, hidden=HIDDEN, batch_norm=True)
    path = vgg.export(model, tmp_path / "m.onnx", format="onnx").path  # its reload makes a session: checked
    assert onnx_files.check_graph(path) is None


# --- images whose header promises more than memory holds ------------------------------------------------

def png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid 8-bit grayscale PNG of ``width`` x ``height`` black pixels, compressed a row at a time so that
    making it takes no more memory than the file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    packer, rows, parts = zlib.compressobj(9), bytes(width + 1) * 65536, []
    for start in range(0, height, 65536):
        parts.append(packer.compress(rows[:(width + 1) * min(65536, height - start)]))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory) -> Path:
    """A tiny torch model file as ``vgg train`` writes one."""
    vgg = load_backend("torch")
    folder = tmp_path_factory.mktemp("model")
    return vgg.save(vgg.VGG(arch.TINY, image_size=SIZE, hidden=HIDDEN), folder / f"m{formats.TRAINED['torch']}")


@pytest.mark.slow
@torch_only
def test_an_image_bomb_is_refused_from_its_header_in_bounded_memory(trained_model, tmp_path):
    """A 173 KB PNG of 1 x 89,000,000 pixels (1.84 GB peak when Pillow decoded it) costs what a 28x28 one does."""
    bomb = png_bomb(tmp_path / "bomb.png", 1, 89_000_000)
    assert bomb.stat().st_size < 200_000
    normal = tmp_path / "normal.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(normal)
    status, out, err, normal_peak = run_measured(["predict", "--model", trained_model, normal])
    assert status == 0 and out.startswith(str(normal)), err
    status, out, err, peak = run_measured(["predict", "--model", trained_model, bomb])
    assert status == 2 and out == "", err
    assert our_error(err) == (f"vgg predict: error: {bomb}: 1 x 89000000 pixels, more than the "
                              f"{image_files.MAX_PIXELS:,} an image may have (MAX_PIXELS); shrink it first")
    assert peak < 2 * normal_peak, f"{peak / 2**20:.0f} MB against {normal_peak / 2**20:.0f} MB"


def test_the_pixel_limit_counts_after_jpegs_draft_scaling(tmp_path):
    """A 6000 x 6000 JPEG (36 M pixels) decodes at 1/8 scale, within the limit; the same as a PNG is refused."""
    pixels = Image.new("L", (6000, 6000), 128)
    pixels.save(tmp_path / "big.jpg", quality=50)
    pixels.save(tmp_path / "big.png")
    assert image_files.read(tmp_path / "big.jpg", 1, SIZE).shape == (125, 125)  # 750 x 750, box-averaged by 6
    with pytest.raises(image_files.ImageError, match="6000 x 6000 pixels, more than the 33,554,432"):
        image_files.read(tmp_path / "big.png", 1, SIZE)


@pytest.mark.parametrize("size, mode, ok", [
    ((image_files.MAX_PIXELS, 1), "L", True), ((image_files.MAX_PIXELS + 1, 1), "L", False),
    ((8, 8), "RGBA", True), ((8, 8), "F", True), ((8, 8), "I;16", True), ((8, 8), "RGBA;16B", False)])
def test_an_image_header_is_checked_for_pixels_and_bytes_a_pixel(size, mode, ok):
    """At most MAX_PIXELS pixels of at most 8 bits x 4 channels; a mode Pillow does not describe is refused."""
    if ok:
        image_files.check_header("a.png", size, mode)
    else:
        with pytest.raises(image_files.ImageError, match="^a.png: "):
            image_files.check_header("a.png", size, mode)


# --- file names that would forge output -----------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("a.png", "a.png"), ("été.png", "été.png"), ("a b.png", "a b.png"),
    ("a.png: T-shirt/top 1.000\nb.png", "'a.png: T-shirt/top 1.000\\nb.png'"),
    ("\x1b[2Ja.png", "'\\x1b[2Ja.png'"), ("\u202egnp.exe", "'\\u202egnp.exe'"), ("bad\udcff.png", "'bad\\udcff.png'")])
def test_a_name_is_shown_as_is_when_printable_and_escaped_otherwise(name, expected):
    assert formats.shown(Path(name)) == expected


FORGING = "a.png: Shirt 1.000\n\x1b[31mb.png"


def test_classify_gives_the_raw_name_and_the_escaped_one(tmp_path):
    path = tmp_path / FORGING
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path, format="PNG")
    meta = {"layout": "NCHW", "classes": formats.class_names(10), "input_shape": ["batch", 1, SIZE, SIZE],
            "config": {"image_size": SIZE, "in_channels": 1}}
    opened = Opened(Path("m.onnx"), "onnx", meta, lambda images: np.zeros((len(images), 10), np.float32))
    [result] = predict.classify(opened, [path], progress=False)
    assert result["file"] == str(path) and result["shown"] == repr(str(path))
    assert json.loads(json.dumps(result))["file"] == str(path)


@torch_only
def test_vgg_predict_prints_one_line_per_image_whatever_its_name(trained_model, tmp_path, capsys):
    forging = tmp_path / FORGING
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(forging, format="PNG")
    plain = tmp_path / "plain.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(plain)
    assert cli.main(["predict", "--model", str(trained_model), str(forging), str(plain)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(repr(str(forging)) + ": ") and "\x1b" not in lines[0]
    assert lines[1].startswith(f"{plain}: ")


def test_errors_about_image_files_escape_their_names(tmp_path):
    broken = tmp_path / "x\n\x1b[2J.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for call in (lambda: image_files.read(broken), lambda: image_files.expand([tmp_path / "gone\n.png"])):
        with pytest.raises(image_files.ImageError) as refused:
            call()
        assert "\n" not in str(refused.value) and "\x1b" not in str(refused.value) and "\\n" in str(refused.value)


# --- checkpoints whose meta lies -------------------------------------------------------------------------

def train_args(data: Path, out: Path, *more: str) -> list[str]:
    """A torch run of the tiny arch at 32x32 on made-up data, one epoch unless ``more`` says otherwise."""
    return ["train", "--backend", "torch", "--arch", "tiny", "--resize", str(SIZE), "--hidden", str(HIDDEN),
            "--epochs", "1", "--batch-size", "8", "--data-dir", str(data), "--no-verify", "--no-progress",
            "--out", str(out), *more]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, a finished one-epoch run, as a real process makes it); tests forge copies of it."""
    root = tmp_path_factory.mktemp("run")
    fake_files(root / "data", n_train=16, n_test=8)
    proc = vgg_cli(*train_args(root / "data", root / "run"))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return root / "data", root / "run"


def forged(run: Path, to: Path, edit) -> Path:
    """A copy of ``run`` whose checkpoint's meta is ``edit(meta)``, written as a checkpoint is: the digest is
    valid, only the meta lies."""
    out = Path(shutil.copytree(run, to, ignore=shutil.ignore_patterns(run_folder.LOCK)))
    folder = out / "checkpoints"
    arrays, meta = checkpoint.read(checkpoint.latest(folder))
    checkpoint.write(folder, 1, arrays, edit(meta))
    return out


def run_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != run_folder.LOCK}


def _set(key: str, value):
    """An edit of a checkpoint's meta: ``key`` set to ``value``."""
    return lambda meta: {**meta, key: value}


def _row(key: str, value):
    """An edit of a checkpoint's meta: ``key`` of its first history row set to ``value``."""
    return lambda meta: {**meta, "history": [{**meta["history"][0], key: value}, *meta["history"][1:]]}


#: what a forged meta is, -> (the edit making it, what the refusal says)
LIES = {
    "no run": (lambda meta: {k: v for k, v in meta.items() if k != "run"}, "its meta has no run"),
    "a list": (lambda meta: [meta], "its meta is not an object"),
    "run not an object": (_set("run", ["torch"]), "has a run or recipe that is not an object"),
    "epoch 0": (_set("epoch", 0), "says epoch 0, not an integer from 1 to this run's 3 epochs"),
    "epoch as text": (_set("epoch", "1"), "says epoch '1', not an integer"),
    "epoch true": (_set("epoch", True), "says epoch True, not an integer"),
    "epoch 4": (_set("epoch", 4), "says epoch 4, not an integer from 1 to this run's 3 epochs"),
    "no rows": (_set("history", []), "has a history that is not 1 rows of finite epoch, train_loss"),
    "text in a row": (_row("train_loss", "0.5"), "has a history that is not"),
    "an extra column": (_row("x", 1.0), "has a history that is not"),
    "a row misnumbered": (_row("epoch", 2), "has a history that is not"),
}


@pytest.fixture
def same_threads(monkeypatch) -> None:
    """A ``vgg train`` in this process sets torch's thread count from VGG_THREADS: to the one it has."""
    import torch
    monkeypatch.setenv("VGG_THREADS", str(torch.get_num_threads()))


@pytest.mark.slow
@torch_only
@pytest.mark.parametrize("lie", LIES)
def test_a_checkpoint_whose_meta_lies_is_refused_before_anything_is_written(finished_run, lie, tmp_path, capsys,
                                                                             same_threads):
    data, run = finished_run
    edit, message = LIES[lie]
    out = forged(run, tmp_path / "run", edit)
    before = run_files(out)
    err = error(capsys, *train_args(data, out, "--resume", "--epochs", "3"))
    assert "cannot be resumed: its meta" in err and message in err, err
    assert run_files(out) == before


@pytest.mark.slow
@torch_only
def test_a_checkpoint_past_the_runs_epochs_trains_nothing_and_writes_nothing(finished_run, tmp_path):
    """epoch 1,000,000,000 used to end a --epochs 3 run at once, exit 0, with a model and run.json written."""
    data, run = finished_run
    out = forged(run, tmp_path / "run", _set("epoch", 10**9))
    for name in ("run.json", "history.json", "history.csv", "history.png", f"model{formats.TRAINED['torch']}"):
        (out / name).unlink()
    for record in records.find([out]):  # the finished run's record of its figures
        record.path.unlink()
    proc = vgg_cli(*train_args(data, out, "--resume", "--epochs", "3"))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "says epoch 1000000000, not an integer from 1 to this run's 3 epochs" in our_error(err)
    assert run_files(out) == {}


# --- workers' environment ---------------------------------------------------------------------------------

@pytest.mark.parametrize("given, entries", [
    (None, []), ("", []), ("/x:", ["/x"]), (":/x", ["/x"]), ("/a::/b", ["/a", "/b"]), (":", [])])
def test_workers_pythonpath_has_no_empty_entry(given, entries):
    """An empty entry is the working folder: it would undo PYTHONSAFEPATH."""
    env = launch.safe_path_env({} if given is None else {"PYTHONPATH": given})
    assert env["PYTHONSAFEPATH"] == "1" and env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), *entries]


@pytest.mark.slow
def test_a_worker_cannot_import_from_the_working_folder(tmp_path):
    (tmp_path / "planted.py").write_text("")
    env = launch.safe_path_env({**os.environ, "PYTHONPATH": f"{tmp_path / 'x'}{os.pathsep}"})
    found = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('planted'))"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert found.strip() == "None"
