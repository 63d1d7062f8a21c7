"""Model graphs from elsewhere (issue 34), the static checks: which functions of a SavedModel may hold
checkpoint ops is decided from what ``tf.saved_model.load`` and the signatures call, never from the file's own
saver, through nested calls; a ``.weights.h5`` and an MXNet export are held to the shapes of the model they
claim to be before anything is allocated. Each crafted file is signed by this user, so that these checks
alone stand in its way; the relabelled SavedModels are real attacks (trusted, they write their marker file;
the SaveV2 ones passed the checks before issue 34)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.core.config import MAX_TENSOR_BYTES
from common.serving import formats, signing
from helpers import load_backend
from hostile import ARCH, SIZE, error, export_module
from processes import run_measured
from tiny_data import HIDDEN


def written(folder: Path) -> list[Path]:
    """The marker files a crafted model wrote in ``folder`` (SaveV2 adds suffixes to its prefix)."""
    return sorted(folder.glob("marker*"))


# --- SavedModel: what loading and serving run is the program, whatever the saver says ----------------------

def _parsed(path: Path):
    from tensorflow.core.protobuf import saved_model_pb2
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    return saved


def _rewrite(path: Path, edit) -> None:
    """Apply ``edit(meta graph)`` to the SavedModel at ``path``, then sign it as this user."""
    saved = _parsed(path)
    edit(saved.meta_graphs[0])
    (path / "saved_model.pb").write_bytes(saved.SerializeToString())
    signing.sign(path)


def _relabel_as_checkpoint(graph) -> None:
    """The auditor's relabelling: the saver's save function and the node calling it go, and the saver names
    the serving signature's node as its restore op and the real restore node as its save tensor, so that
    every function the graph's nodes call looks like the checkpoint's."""
    saver = graph.saver_def
    save_node = saver.save_tensor_name.split(":")[0]
    save_function = next(n for n in graph.graph_def.node if n.name == save_node).attr["f"].func.name
    nodes = [n for n in graph.graph_def.node if n.name != save_node]
    functions = [f for f in graph.graph_def.library.function if f.signature.name != save_function]
    del graph.graph_def.node[:], graph.graph_def.library.function[:]
    graph.graph_def.node.extend(nodes)
    graph.graph_def.library.function.extend(functions)
    serving = next(n.name for n in nodes if n.op == "StatefulPartitionedCall" and n.name != saver.restore_op_name)
    saver.save_tensor_name, saver.restore_op_name = f"{saver.restore_op_name}:0", serving


def _writer(tmp_path: Path, native, hidden_op: str, depth: int) -> Path:
    """A SavedModel whose ``serve`` returns logits and writes the marker file through ``hidden_op`` (SaveV2 or
    WriteFile), ``depth`` nested tf.function calls (each a StatefulPartitionedCall in a library function)
    below the signature; relabelled as checkpoint code, with a real export's metadata, signed."""
    from vgg_tf.framework import tf
    marker = str(tmp_path / "marker")

    def write(images):
        if hidden_op == "SaveV2":
            op = tf.raw_ops.SaveV2(prefix=marker, tensor_names=["images"], shape_and_slices=[""], tensors=[images])
        else:
            op = tf.io.write_file(marker, "written")
        with tf.control_dependencies([op]):  # the logits wait for the write, so no graph pass can drop it
            return tf.identity(images)

    for _ in range(depth):
        write = tf.function(write)

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 1], tf.float32, name=formats.INPUT)])
        def serve(self, images):
            flat = tf.reshape(write(images), [-1, SIZE * SIZE])
            return tf.matmul(flat, np.zeros((SIZE * SIZE, 10), np.float32))

    path = tmp_path / "writer.savedmodel"
    module = Writer()
    tf.saved_model.save(module, str(path), signatures={"serve": module.serve})
    (path / "assets.extra").mkdir()
    shutil.copy(native("tf") / "assets.extra" / formats.METADATA_FILE, path / "assets.extra")
    _rewrite(path, _relabel_as_checkpoint)
    return path


@pytest.mark.slow
@pytest.mark.backend("tf")
@pytest.mark.parametrize("hidden_op, depth", [("SaveV2", 0), ("SaveV2", 2), ("WriteFile", 2)],
                         ids=["SaveV2 in serve", "SaveV2 two calls down", "WriteFile two calls down"])
def test_a_savedmodel_relabelled_as_checkpoint_code_is_refused_and_writes_nothing(native, png, tmp_path, capsys,
                                                                                 hidden_op, depth):
    """Its saver claims the serving functions: they are still the program, and a file op there is refused."""
    path = _writer(tmp_path, native, hidden_op, depth)
    program, _ = export_module("tf").saved_model_ops(path)
    assert hidden_op in program
    err = error(capsys, "predict", "--model", path, png)
    assert f"it holds op {hidden_op}, which" in err and "--trust-model" in err, err
    assert written(tmp_path) == []


@pytest.mark.backend("tf")
@pytest.mark.parametrize("hidden_op, depth", [("SaveV2", 0), ("WriteFile", 2)], ids=["SaveV2", "WriteFile nested"])
def test_the_relabelled_savedmodels_are_real(native, tmp_path, hidden_op, depth):
    """Trusted, the crafted file loads, serves and writes its marker."""
    forward, _ = export_module("tf").load_exported(_writer(tmp_path, native, hidden_op, depth), trust_model=True)
    assert forward(np.zeros((1, SIZE, SIZE, 1), np.float32)).shape == (1, 10)
    assert written(tmp_path)


def _callers(library, name: str) -> tuple:
    """``(function, node)`` of the first library function calling ``name`` through its ``f`` attribute."""
    return next((f, n) for f in library for n in f.node_def if "f" in n.attr and n.attr["f"].func.name == name)


def _hide_callee(graph) -> None:
    """The call to the SaveV2 function becomes a call to an attribute placeholder of its function, which
    that function's caller fills in through its call's instantiation attributes: a function-valued
    attribute inside a function-valued attribute."""
    library = graph.graph_def.library.function
    writer = next(f.signature.name for f in library if any(n.op == "SaveV2" for n in f.node_def))
    middle, call = _callers(library, writer)
    _, outer_call = _callers(library, middle.signature.name)
    call.attr["f"].ClearField("func")
    call.attr["f"].placeholder = "callee"
    middle.signature.attr.add(name="callee", type="func")
    outer_call.attr["f"].func.attr["callee"].func.name = writer


@pytest.mark.backend("tf")
def test_a_function_named_only_in_another_call_s_attributes_is_followed(native, tmp_path):
    """TensorFlow fills such a placeholder when it instantiates the function (its Python loader refuses this
    file today); the check follows it anyway, or the callee would pass as checkpoint code."""
    path = _writer(tmp_path, native, "SaveV2", 2)
    _rewrite(path, _hide_callee)
    program, _ = export_module("tf").saved_model_ops(path)
    assert "SaveV2" in program
    assert "op SaveV2" in export_module("tf").findings(path)


@pytest.mark.slow
@pytest.mark.backend("tf")
def test_a_savedmodel_without_an_object_graph_is_refused(native, png, tmp_path, capsys):
    """tf.saved_model.load would load it as TF1's, running the ops its saver and init op name."""
    path = tmp_path / "tf1.savedmodel"
    shutil.copytree(native("tf"), path)
    _rewrite(path, lambda graph: graph.ClearField("object_graph_def"))
    assert "it holds a TF1-style meta graph" in error(capsys, "predict", "--model", path, png)


@pytest.mark.slow
@pytest.mark.backend("tf")
def test_a_savedmodel_constant_stated_as_one_value_and_a_huge_shape_is_refused(native, png, tmp_path, capsys):
    """A constant's value may be one number and a shape, which TensorFlow fills out in memory."""
    path = tmp_path / "splat.savedmodel"
    shutil.copytree(native("tf"), path)

    def splat(graph):
        serve = next(f for f in graph.graph_def.library.function if "___call__" in f.signature.name
                     and "wrapper" not in f.signature.name)
        value = next(n for n in serve.node_def if n.op == "Const").attr["value"].tensor
        value.ClearField("tensor_content")
        value.tensor_shape.ClearField("dim")
        value.tensor_shape.dim.add(size=20000)
        value.tensor_shape.dim.add(size=20000)
        value.int_val[:] = [1]
    _rewrite(path, splat)
    err = error(capsys, "predict", "--model", path, png)
    assert f"holds 1,600,000,000 bytes for one image, beyond this project's bound of {MAX_TENSOR_BYTES:,}" in err


# --- .weights.h5: every dataset is the model's own ----------------------------------------------------------

@pytest.fixture(scope="module")
def weights_h5(tmp_path_factory) -> Path:
    """A real ``vgg_tf.save`` file of the tiny VGG."""
    vgg = load_backend("tf")
    return vgg.save(vgg.VGG(ARCH, image_size=SIZE, hidden=HIDDEN), tmp_path_factory.mktemp("h5") / "m.weights.h5")


BIAS = "layers/dense/vars/1"  # the first dense layer's bias, (HIDDEN,) float32


def _edited_h5(source: Path, target: Path, edit) -> Path:
    import h5py
    shutil.copy(source, target)
    with h5py.File(target, "a") as f:
        edit(f)
    return target


def _fill_bomb(f) -> None:
    """The bias replaced by a 20000x20000 float32 dataset no chunk of which is written: HDF5 fills it in."""
    del f[BIAS]
    f.create_dataset(BIAS, shape=(20000, 20000), dtype="float32", chunks=(1000, 1000), fillvalue=1.0)


def _extra(f) -> None:
    f.create_dataset("layers/dense/vars/2", data=np.zeros(3, np.float32))


def _float64(f) -> None:
    del f[BIAS]
    f.create_dataset(BIAS, data=np.zeros(HIDDEN))


def _resizable(f) -> None:
    del f[BIAS]
    f.create_dataset(BIAS, data=np.zeros(HIDDEN, np.float32), maxshape=(None,))


def _missing(f) -> None:
    del f[BIAS]


def _soft_link(f) -> None:
    import h5py
    del f[BIAS]
    f[BIAS] = h5py.SoftLink("/layers/dense/vars/0")


@pytest.mark.backend("tf")
def test_our_weights_files_load(weights_h5):
    vgg = load_backend("tf")
    assert vgg.load(weights_h5).config.hidden == HIDDEN


@pytest.mark.slow
@pytest.mark.backend("tf")
def test_an_hdf5_fill_bomb_is_one_line_and_takes_no_memory(weights_h5, png, tmp_path):
    path = _edited_h5(weights_h5, tmp_path / "bomb.weights.h5", _fill_bomb)
    assert path.stat().st_size < 1_000_000
    status, _, err, peak = run_measured(["predict", "--model", path, png])
    ours = [line for line in err.splitlines() if line.startswith("vgg ")]
    assert status == 2 and len(ours) == 1 and "Traceback" not in err, err[-3000:]
    assert f"{BIAS} is (20000, 20000) float32 where its model has ({HIDDEN},) float32" in ours[0], ours[0]
    assert peak < 1.5e9, f"peak resident memory {peak:,} bytes"


@pytest.mark.backend("tf")
@pytest.mark.parametrize("edit, named", [
    (_extra, "it holds layers/dense/vars/2, which its model has not"),
    (_float64, f"{BIAS} is ({HIDDEN},) float64 where its model has ({HIDDEN},) float32"),
    (_resizable, f"{BIAS} is resizable or stored outside the file"),
    (_missing, f"it lacks {BIAS}"),
    (_soft_link, f"{BIAS} is a link"),
], ids=["extra", "float64", "resizable", "missing", "link"])
def test_a_weights_file_that_is_not_its_model_s_is_one_line(weights_h5, png, tmp_path, capsys, edit, named):
    path = _edited_h5(weights_h5, tmp_path / "edited.weights.h5", edit)
    err = error(capsys, "predict", "--model", path, png)
    assert f"{path}: its weights do not fit its config: {named}" in err, err


# --- MXNet: shapes inferred from the symbol before any parameter is read --------------------------------------

def _edited_symbol(native, tmp_path: Path, op: str, **attrs) -> Path:
    """A copy of the real MXNet export with ``attrs`` set on its first ``op`` node and the weights' stated
    shapes left out (which would contradict the edit), signed."""
    path = tmp_path / "edited.mxnet"
    shutil.copytree(native("mxnet"), path)
    symbol = path / "model-symbol.json"
    graph = json.loads(symbol.read_text())
    next(node for node in graph["nodes"] if node["op"] == op)["attrs"].update(attrs)
    for node in graph["nodes"]:
        node.get("attrs", {}).pop("__shape__", None)
    symbol.write_text(json.dumps(graph))
    signing.sign(path)
    return path


@pytest.mark.slow
@pytest.mark.backend("mxnet")
@pytest.mark.parametrize("op, attrs, node, size", [
    ("FullyConnected", {"num_hidden": "300000000"}, r"dense\d+_fwd_output", 1_200_000_000),
    ("Convolution", {"pad": "(20000, 20000)"}, r"conv\d+_fwd_output", 4 * 4 * 40030 * 40030),
], ids=["wide dense", "padding"])
def test_an_mxnet_graph_asking_for_more_than_a_gib_is_refused(native, png, tmp_path, capsys, op, attrs, node, size):
    err = error(capsys, "predict", "--model", _edited_symbol(native, tmp_path, op, **attrs), png)
    assert re.search(f"its node {node} holds {size:,} bytes for one image, beyond this project's bound", err), err


@pytest.mark.slow
@pytest.mark.backend("mxnet")
def test_mxnet_parameters_that_do_not_fit_the_graph_are_refused(native, png, tmp_path, capsys):
    err = error(capsys, "predict", "--model", _edited_symbol(native, tmp_path, "Convolution", num_filter="5"), png)
    assert re.search(r"its parameters do not fit its graph: arg:conv\d+_bias is \(4,\) float32 where its graph "
                     r"has \(5,\) float32", err), err  # Gluon numbers its layers per process
