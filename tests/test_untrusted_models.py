"""Model files from elsewhere (issue 26): opening one never runs code of its own unless told to
(``--trust-model``), and a foreign, broken or oversized file is one line and exit 2, refused before anything
big is allocated or built. The crafted files are real attacks: trusted, each one does what it was made for
(create a marker file, copy a file)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from common.core import arch, canonical
from common.core.config import ConfigError, ModelConfig
from common.serving import formats, signing
from common.tools import cli, models
from helpers import ACTIVE, REFERENCE, ROOT, load_backend
from hostile import KINDS, SIZE, error, export_module
from tiny_data import HIDDEN


def subprocess_error(*argv) -> str:
    """The error line of ``vgg argv`` as a real process, which must exit 2 with no traceback: the one line of
    stderr that is ours (a framework may log its start-up chatter before it)."""
    proc = subprocess.run([sys.executable, "-m", "common.tools.cli", *map(str, argv)], cwd=ROOT, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=300)
    err = proc.stderr
    ours = [line for line in err.splitlines() if line.startswith("vgg ")]
    assert proc.returncode == 2, err[-3000:]
    assert len(ours) == 1 and err.strip().endswith(ours[0]) and "Traceback" not in err, err[-3000:]
    return ours[0]


# --- our own exports stay inside the allowlists ---------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ACTIVE)
def test_our_exports_hold_only_what_the_allowlists_name(native, name, kind):
    """The allowlists are derived from these exports: a VGG with every layer kind holds nothing outside."""
    assert export_module(name).findings(native(name, kind)) == []


# --- .pt2: pickle and Python inside the archive -----------------------------------------------------------

class Payload:
    """Unpickled, it creates the marker file: what a real payload would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _rewrite(source: Path, target: Path, edit) -> None:
    """Copy the zip ``source`` to ``target`` with ``edit(root, entries)`` applied to its entries."""
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
        root = archive.namelist()[0].split("/")[0]
    edit(root, entries)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def _edit_program(root: str, entries: dict, key: str, value) -> None:
    """Set every ``key`` in the program's JSON to ``value``."""
    name = f"{root}/models/model.json"

    def walk(node):
        if isinstance(node, dict):
            return {k: value if k == key else walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node
    entries[name] = json.dumps(walk(json.loads(entries[name]))).encode()


def _pickled_constant(root: str, entries: dict, marker: Path) -> None:
    entries[f"{root}/data/constants/model_constants_config.json"] = json.dumps({"config": {"c0": {
        "path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}}).encode()
    entries[f"{root}/data/constants/opaque_obj_0"] = pickle.dumps(Payload(marker))


def _pickled_inputs(root: str, entries: dict, marker: Path) -> None:
    import io

    import torch
    buffer = io.BytesIO()
    torch.save(((Payload(marker),), {}), buffer)
    entries[f"{root}/data/sample_inputs/model.pt"] = buffer.getvalue()


def _guard_code(root: str, entries: dict, marker: Path) -> None:
    _edit_program(root, entries, "guards_code", [f"__import__('builtins').open({str(marker)!r}, 'w') is not None"])


def _symbolic_size(root: str, entries: dict, marker: Path) -> None:
    _edit_program(root, entries, "expr_str", f"__import__('builtins').open({str(marker)!r}, 'w') and "
                                             "Symbol('s31', positive=True, integer=True)")


#: craft -> (what it does to a real export, what the refusal names); torch.export.load would run each
PT2_CRAFTS = {"pickled constant": (_pickled_constant, "pickled constant c0"),
              "pickled example inputs": (_pickled_inputs, "pickled data that weights-only loading refuses"),
              "guard code": (_guard_code, "guard code __import__"),
              "symbolic size": (_symbolic_size, "symbolic size __import__")}


@pytest.fixture(params=PT2_CRAFTS)
def crafted_pt2(request, native, tmp_path) -> tuple[Path, Path, str]:
    """(a .pt2 rewritten from a real export to run code, the marker file its code creates, what is named)."""
    edit, named = PT2_CRAFTS[request.param]
    marker, path = tmp_path / "marker", tmp_path / "crafted.pt2"
    _rewrite(native("torch"), path, lambda root, entries: edit(root, entries, marker))
    signing.sign(path)  # trusted by mistake: the static checks are the second layer
    return path, marker, named


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_a_pt2_that_would_run_code_is_refused_and_runs_nothing(crafted_pt2, png, capsys):
    path, marker, named = crafted_pt2
    err = error(capsys, "predict", "--model", path, png)
    assert named in err and str(path) in err and "--trust-model" in err, err
    assert not marker.exists()


@pytest.mark.backend("torch")
def test_trust_model_loads_it_knowingly_and_its_code_runs(crafted_pt2, png, capsys):
    """The crafted files are real: opened in this process with every check skipped, each one's code runs
    (torch may refuse what it left behind); ``vgg predict`` would run it in its confined child instead."""
    path, marker, _ = crafted_pt2
    with contextlib.suppress(Exception):  # torch may refuse what the code left behind, or the call after it
        opened = models.open_model(path, trust_model=True)
        opened.forward(np.zeros((2, *opened.meta["input_shape"][1:]), np.float32))  # guards run at the call
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_a_pt2_with_pickled_constants_is_one_line_from_the_command(native, png, tmp_path):
    marker, path = tmp_path / "marker", tmp_path / "crafted.pt2"
    _rewrite(native("torch"), path, lambda root, entries: _pickled_constant(root, entries, marker))
    signing.sign(path)
    assert "pickled constant c0" in subprocess_error("predict", "--model", path, png)
    assert not marker.exists()


# --- SavedModel, MXNet symbol, StableHLO: programs, refused by their ops --------------------------------

@pytest.mark.slow
@pytest.mark.backend("tf")
def test_a_savedmodel_that_copies_a_file_is_refused_before_loading(native, png, tmp_path):
    """A ten-line tf.Module whose serve copies a file, with the metadata of a real export beside it."""
    from vgg_tf.framework import tf
    secret, stolen = tmp_path / "secret.txt", tmp_path / "stolen.txt"
    secret.write_text("secret")

    class Thief(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 1], tf.float32)])
        def serve(self, images):
            tf.io.write_file(str(stolen), tf.io.read_file(str(secret)))
            return tf.zeros([tf.shape(images)[0], 10])

    path = tmp_path / "thief.savedmodel"
    tf.saved_model.save(Thief(), str(path))
    (path / "assets.extra").mkdir()
    shutil.copy(native("tf") / "assets.extra" / formats.METADATA_FILE, path / "assets.extra")
    signing.sign(path)
    err = subprocess_error("predict", "--model", path, png)
    assert "op ReadFile" in err and "op WriteFile" in err and "--trust-model" in err, err
    assert not stolen.exists()


@pytest.mark.slow
@pytest.mark.backend("mxnet")
def test_an_mxnet_symbol_with_a_foreign_operator_is_refused(native, png, tmp_path, capsys):
    path = tmp_path / "foreign.mxnet"
    shutil.copytree(native("mxnet"), path)
    symbol = path / "model-symbol.json"
    graph = json.loads(symbol.read_text())
    next(node for node in graph["nodes"] if node["op"] == "Flatten")["op"] = "_cvimread"
    symbol.write_text(json.dumps(graph))
    signing.sign(path)
    assert "op _cvimread" in error(capsys, "predict", "--model", path, png)


@pytest.mark.slow
@pytest.mark.backend("jax")
def test_a_jax_export_with_a_foreign_custom_call_is_refused(native, png, tmp_path, capsys):
    """A real jax.export blob whose module makes a custom call (LAPACK's, through Cholesky) besides the
    batch-size assertion: native code of this process, handed bytes from the file."""
    import jax
    import jax.numpy as jnp
    from jax import export as jax_export

    def forward(images):
        m = images[:, :10, :10, 0]
        return jnp.linalg.cholesky(m @ jnp.swapaxes(m, 1, 2) + jnp.eye(10))[:, 0, :]
    blob = jax_export.export(jax.jit(forward), platforms=("cpu",))(
        jax.ShapeDtypeStruct((2, SIZE, SIZE, 1), jnp.float32)).serialize()
    path = tmp_path / "foreign.jax_export"
    path.mkdir()
    (path / "exported.bin").write_bytes(blob)
    shutil.copy(native("jax") / formats.METADATA_FILE, path)
    signing.sign(path)
    assert "custom call lapack_spotrf_ffi" in error(capsys, "predict", "--model", path, png)


@pytest.mark.slow
@pytest.mark.backend("mxnet")
def test_truncated_mxnet_params_are_one_line_without_the_cpp_traceback(native, png, tmp_path, capsys):
    vgg = load_backend("mxnet")
    trained = vgg.save(vgg.VGG(arch.TINY, image_size=SIZE, hidden=HIDDEN), tmp_path / "m.params")
    cut = tmp_path / "cut.params"
    cut.write_bytes(trained.read_bytes()[:5000])
    err = subprocess_error("export", "--model", cut)
    assert "Invalid NDArray file format" in err and "ndarray.cc" not in err, err
    folder = tmp_path / "cut.mxnet"
    shutil.copytree(native("mxnet"), folder)
    params = folder / "model-0000.params"
    params.write_bytes(params.read_bytes()[:5000])
    signing.sign(folder)
    assert "is not a readable MXNet export (MXNetError: " in error(capsys, "predict", "--model", folder, png)


# --- metadata, class names, weights and configs from files ------------------------------------------------

def _metadata(num_classes: int = 10, **changes) -> dict:
    """The metadata vgg export writes for a tiny NCHW model, with ``changes``."""
    config = ModelConfig(arch.TINY, num_classes=num_classes, image_size=SIZE, hidden=HIDDEN)
    return {"producer": "vgg-frameworks", "backend": "torch", "format": "onnx", "input": formats.INPUT,
            "output": formats.OUTPUT, "layout": "NCHW", "input_shape": ["batch", 1, SIZE, SIZE],
            "classes": formats.class_names(num_classes), "config": config.to_dict(), **changes}


def _onnx_file(path: Path, meta: dict, logits: int = 10) -> Path:
    """A one-layer ONNX model (flatten, matrix product) from NCHW images to ``logits``, carrying ``meta``."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    weight = numpy_helper.from_array(np.ones((SIZE * SIZE, logits), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", [formats.INPUT], ["flat"]), helper.make_node("MatMul", ["flat", "w"],
                                                                                  [formats.OUTPUT])],
        "linear", [helper.make_tensor_value_info(formats.INPUT, TensorProto.FLOAT, ["batch", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info(formats.OUTPUT, TensorProto.FLOAT, ["batch", logits])], [weight])
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 13)])
    model.metadata_props.add(key="vgg", value=json.dumps(meta))
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("meta, named", [
    ({k: v for k, v in _metadata().items() if k != "layout"}, "has no layout"),
    (_metadata(layout="NCWH"), "not one of NCHW, NHWC"),
    (_metadata(input_shape=["batch", 1, 64, 64]), "but its config and layout make"),
    (_metadata(classes=[str(i) for i in range(5)]), "names 5 classes for the 10 logits"),
    (_metadata(classes=list(range(10))), "classes that are not a list of names"),
    (_metadata(config={**_metadata()["config"], "hidden": 10**6}), "hidden 1,000,000, beyond"),
    (_metadata(config={**_metadata()["config"], "colour": "red"}), "unknown field(s) colour"),
    (_metadata(config={**_metadata()["config"], "arch": [[1, 8], 16]}), "cannot make a VGG"),
], ids=["missing key", "layout", "input shape", "class count", "class type", "config bound", "config field",
        "arch"])
def test_metadata_is_validated_before_use(meta, named):
    with pytest.raises(formats.ModelFileError, match=r"^m\.onnx: ") as refused:
        formats.loads(json.dumps(meta), "m.onnx")
    assert named in str(refused.value)


@pytest.mark.slow
def test_onnx_metadata_with_a_missing_key_is_one_line_from_the_command(png, tmp_path):
    meta = {k: v for k, v in _metadata().items() if k != "classes"}
    assert "has no classes" in subprocess_error("predict", "--model", _onnx_file(tmp_path / "m.onnx", meta), png)


@pytest.mark.slow
def test_fewer_class_names_than_logits_is_refused(png, tmp_path, capsys):
    path = _onnx_file(tmp_path / "m.onnx", _metadata(num_classes=5), logits=10)
    assert "names 5 classes, but the model gives 10 logits" in error(capsys, "predict", "--model", path, png)


@pytest.mark.slow
def test_class_names_reach_the_terminal_without_control_characters(png, tmp_path, capsys):
    names = [f"\x1b[2Jclass\u202e{i}\nforged line\x07" for i in range(10)]
    path = _onnx_file(tmp_path / "m.onnx", _metadata(classes=names))
    assert cli.main(["predict", "--model", str(path), str(png), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "class0forged line" in out, repr(out)
    assert not any(ch in out for ch in "\x1b\u202e\x07")


def _safetensors(path: Path, header: dict) -> Path:
    """A safetensors file of ``header`` alone (every tensor empty)."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    return path


@pytest.mark.slow
@pytest.mark.backend(REFERENCE)
def test_a_tiny_safetensors_declaring_a_huge_layer_is_refused_before_building(png, tmp_path):
    path = _safetensors(tmp_path / "huge.safetensors", {
        f"{canonical.DENSE[0]}.weight": {"dtype": "F32", "shape": [2**40, 0], "data_offsets": [0, 0]}})
    assert path.stat().st_size < 128
    err = subprocess_error("predict", "--model", path, "--backend", REFERENCE, "--arch", "tiny", "--resize", SIZE, png)
    assert "hidden 1,099,511,627,776, beyond this project's bound" in err, err


@pytest.mark.backend(REFERENCE)
def test_safetensors_that_do_not_fit_the_architecture_are_one_line(png, tmp_path, capsys):
    path = tmp_path / "tiny.safetensors"
    canonical.save_file(canonical.random_weights(arch.TINY, image_size=SIZE, hidden=HIDDEN), path)
    err = error(capsys, "predict", "--model", path, "--backend", REFERENCE, "--arch", "small", "--resize", SIZE, png)
    assert f"{path}: weights do not fit this model" in err


@pytest.mark.backend(REFERENCE)
def test_a_trained_model_whose_config_the_file_cannot_hold_is_refused_before_building(png, tmp_path, capsys):
    import torch
    path = tmp_path / "m.pt"
    config = ModelConfig(arch.TINY, image_size=SIZE, hidden=20_000).to_dict()  # 0.4 G parameters, 1.7 GB
    torch.save({"config": config, "state_dict": {}}, path)
    assert "more than the file's" in error(capsys, "predict", "--model", path, png)


@pytest.mark.parametrize("change, named", [
    ({"hidden": 65537}, "hidden 65,537"), ({"image_size": 8192}, "image_size 8,192"),
    ({"num_classes": 10**6}, "num_classes 1,000,000"), ({"in_channels": 65}, "in_channels 65"),
    ({"arch": [[10**9, 8]]}, "block 0's convolutions 1,000,000,000"), ({"arch": [[1, 10**5]]}, "channels 100,000"),
    ({"arch": [[1, 512]] * 5, "image_size": 1024, "hidden": 65536}, "parameters"),
    ({"arch": [[1, 8], 16]}, "cannot make a VGG"),
], ids=["hidden", "image size", "classes", "channels in", "convolutions", "channels", "parameters", "arch"])
def test_configs_from_files_are_bounded(change, named):
    data = {**ModelConfig(arch.TINY, image_size=SIZE).to_dict(), **change}
    with pytest.raises(ConfigError, match=r"^m\.pt: ") as refused:
        ModelConfig.from_dict(data, "m.pt")
    assert named in str(refused.value)


def test_a_config_that_is_not_a_mapping_is_refused():
    with pytest.raises(ConfigError, match="not a mapping"):
        ModelConfig.from_dict([ModelConfig(arch.TINY).to_dict()], "m.pt")
