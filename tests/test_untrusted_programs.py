"""Native exports from strangers (issue 34), the static checks under the signature: a ``.pt2`` whose zip
names show one program to Python's zipfile and another to torch, and programs whose few bytes ask for tens
of GB (a pad, a broadcast) are refused before a framework runs them, in one line naming the file, whether
or not this user signed the file by mistake. The NUL-named one is shown real: trusted, its hidden program
runs."""

from __future__ import annotations

import json
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from common.serving import formats, signing
from hostile import SIZE, export_module

PROGRAM = "models/model.json"
#: what a bomb adds to the padded channel axis: 4 KB a channel at 32x32, so 34 GB for one image
EXTRA = 1 << 23


def refusal(name: str, path: Path) -> str:
    """The one-line refusal of ``load_exported(path)``, unsigned (by the signature or the checks) and then
    signed by this user by mistake (by the checks alone); returns the second."""
    messages = []
    for signed in (False, True):
        if signed:
            signing.sign(path)
        with pytest.raises(formats.ModelFileError) as refused:
            export_module(name).load_exported(path)
        messages.append(str(refused.value))
    assert all(len(m.splitlines()) == 1 and str(path) in m for m in messages), messages
    return messages[1]


def entries(path: Path) -> list[tuple[str, bytes]]:
    """The entries of the zip at ``path``, in order."""
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def write_zip(path: Path, items: list[tuple[str, bytes]]) -> Path:
    """Write ``items`` in order as stored entries, names as given: zipfile's writer cuts a name at a NUL, so
    such a name is written with ``#`` for it, then patched in its local header and central directory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in items:
                archive.writestr(name.replace("\0", "#"), data)
    raw = path.read_bytes()
    for name in (name for name, _ in items if "\0" in name):
        assert raw.count(name.replace("\0", "#").encode()) == 2
        raw = raw.replace(name.replace("\0", "#").encode(), name.encode())
    path.write_bytes(raw)
    return path


def guarded(program: bytes, marker: Path) -> bytes:
    """The program with guard code that creates ``marker``: torch execs it when the module is first called."""
    return json.dumps({**json.loads(program),
                       "guards_code": [f"__import__('builtins').open({str(marker)!r}, 'w') is not None"]}).encode()


def hide(path: Path, source: Path, marker: Path, shown_name) -> Path:
    """``source`` with a hostile program (guard code) in place of its own, followed by its own program under
    ``shown_name(name)``: the one zipfile's lookup of the program's name finds (the last of equal names)."""
    items = []
    for name, data in entries(source):
        items += [(name, guarded(data, marker)), (shown_name(name), data)] if name.endswith(PROGRAM) else [(name, data)]
    return write_zip(path, items)


def images() -> np.ndarray:
    """One blank NCHW image."""
    return np.zeros((1, 1, SIZE, SIZE), np.float32)


# --- our own exports ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.backend(name)) for name in ("torch", "jax")])
def test_our_exports_have_no_findings_and_load(native, name):
    """The bounds leave a VGG's own programs alone: no finding, and they load (fake-tensor run included)."""
    path = native(name)
    assert export_module(name).findings(path) == []
    signing.sign(path)
    forward, _ = export_module(name).load_exported(path)
    layout = images() if name == "torch" else images().transpose(0, 2, 3, 1)
    assert forward(layout).shape == (1, 10)


# --- .pt2: names two zip readers resolve differently ----------------------------------------------------

@pytest.mark.backend("torch")
def test_a_nul_in_an_entry_name_cannot_show_zipfile_another_program(native, tmp_path):
    """Two entries for the program, the second's stored name ending in a NUL: zipfile cuts it there and
    finds that one (the real export's program), torch's reader finds the first (guard code)."""
    import torch
    marker = tmp_path / "marker"
    path = hide(tmp_path / "nul.pt2", native("torch"), marker, lambda name: name + "\0")
    root = entries(path)[0][0].split("/")[0]
    with zipfile.ZipFile(path) as archive:  # what the check read before: the harmless program
        assert [info.orig_filename for info in archive.infolist()].count(f"{root}/{PROGRAM}\0") == 1
        assert not json.loads(archive.read(f"{root}/{PROGRAM}"))["guards_code"]
    assert json.loads(torch._C.PyTorchFileReader(str(path)).get_record(PROGRAM))["guards_code"]

    assert f"entry {root}/models/model.json with a control character" in export_module("torch").findings(path)
    assert "with a control character" in refusal("torch", path)
    assert not marker.exists()
    forward, _ = export_module("torch").load_exported(path, trust_model=True)
    forward(images())
    assert marker.exists()  # torch.export.load read the hidden program


@pytest.mark.backend("torch")
@pytest.mark.parametrize("shown_name", [lambda name: name, lambda name: name.replace("model.json", "MODEL.json")],
                         ids=["same name", "same name but for case"])
def test_duplicate_entry_names_are_refused(native, tmp_path, shown_name):
    """torch's reader looks names up ignoring case, zipfile exactly, taking the last of equal names."""
    marker = tmp_path / "marker"
    path = hide(tmp_path / "twice.pt2", native("torch"), marker, shown_name)
    assert any(f.endswith("with a duplicate") for f in export_module("torch").findings(path))
    assert "with a duplicate" in refusal("torch", path)
    assert not marker.exists()


@pytest.mark.backend("torch")
@pytest.mark.parametrize("name, named", [
    ("{root}/extra/../../vgg.json", "with an empty, . or .. part"),
    ("{root}/extra\\..\\vgg.json", "with a backslash"),
    ("/{root}/extra/vgg.json", "with a folder other than {root}"),
    ("{root}//extra/vgg.json", "with an empty, . or .. part"),
], ids=["dot-dot", "backslash", "absolute", "empty part"])
def test_entry_names_that_leave_or_blur_the_archive_folder_are_refused(native, tmp_path, name, named):
    real = entries(native("torch"))
    root = real[0][0].split("/")[0]
    name, named = name.format(root=root), named.format(root=root)
    path = write_zip(tmp_path / "names.pt2", [*real, (name, b"{}")])
    assert any(f.endswith(named) for f in export_module("torch").findings(path))
    assert named in refusal("torch", path)


# --- memory: a few bytes asking for tens of GB ----------------------------------------------------------

def pad_bomb(program: bytes, declared: bool) -> bytes:
    """The program with the LRN's channel padding grown by :data:`EXTRA`; ``declared``: the pad's declared
    sizes say so, else they stay small and the pad's declared input shrinks to match (a lie torch never
    checks: it runs the operator's arguments)."""
    program = json.loads(program)
    graph = program["graph_module"]["graph"]
    node = next(n for n in graph["nodes"] if n["target"] == "torch.ops.aten.pad.default")
    args = {a["name"]: a["arg"] for a in node["inputs"]}
    args["pad"]["as_ints"][-1] += EXTRA
    if declared:
        graph["tensor_values"][node["name"]]["sizes"][2] = {"as_int": 8 + EXTRA}
    else:
        graph["tensor_values"][args["self"]["as_tensor"]["name"]]["sizes"][3:] = [{"as_int": 1}] * 2
    return json.dumps(program).encode()


@pytest.mark.backend("torch")
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "declared small"])
def test_a_pt2_whose_pad_asks_for_34_gb_is_refused(native, tmp_path, declared):
    path = write_zip(tmp_path / "pad.pt2", [(name, pad_bomb(data, declared) if name.endswith(PROGRAM) else data)
                                            for name, data in entries(native("torch"))])
    assert path.stat().st_size < native("torch").stat().st_size + 100
    found = export_module("torch").findings(path)
    assert found == (["tensor pad of 34.4 GB"] if declared else [])  # a lie only the fake-tensor run sees
    assert "tensor pad of 34.4 GB" in refusal("torch", path)


@pytest.mark.backend("torch")
def test_a_pt2_weight_declared_huge_over_an_empty_record_is_refused(native, tmp_path):
    """torch makes a tensor of zeros of the declared sizes where a weight's record is empty."""
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("/model_weights_config.json"):
            config = json.loads(data)
            config["config"]["0.0.weight"]["tensor_meta"]["sizes"] = [{"as_int": 1 << 28}, {"as_int": 4}]
            return json.dumps(config).encode()
        return b"" if name.endswith("/weight_0") else data
    path = write_zip(tmp_path / "zeros.pt2", [(name, edit(name, data)) for name, data in entries(native("torch"))])
    assert "weight 0.0.weight of 4.29 GB" in export_module("torch").findings(path)
    assert "weight 0.0.weight of 4.29 GB" in refusal("torch", path)


@pytest.mark.backend("torch")
def test_a_pt2_entry_inflating_beyond_the_archive_is_refused(native, tmp_path):
    """A deflated entry torch would inflate in memory: 64 MiB of zeros in 64 KB."""
    items = entries(native("torch"))
    path = tmp_path / "deflated.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in items:
            archive.writestr(name, bytes(64 << 20) if name.endswith("/weight_6") else data, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    assert "entry data/weights/weight_6 inflating beyond the archive" in export_module("torch").findings(path)
    assert "inflating beyond the archive" in refusal("torch", path)


def jax_export_of(forward, folder: Path, native_folder: Path) -> Path:
    """A ``.jax_export`` folder as :func:`vgg_jax.export.export` writes it, of ``forward`` (NHWC images of a
    symbolic batch to logits) exported with jax.export, with the metadata of a real export."""
    import jax
    import jax.numpy as jnp
    from jax import export as jax_export
    batch, = jax_export.symbolic_shape("batch")
    exported = jax_export.export(jax.jit(forward), platforms=("cpu", "cuda"))(
        jax.ShapeDtypeStruct((batch, SIZE, SIZE, 1), jnp.float32))
    folder.mkdir()
    (folder / "exported.bin").write_bytes(exported.serialize())
    shutil.copy(native_folder / formats.METADATA_FILE, folder)
    return folder


def broadcast_bomb(images):
    """34 GB for one image, typed in the module: a broadcast to (batch, 92682, 92682, 1)."""
    import jax.numpy as jnp
    big = jnp.broadcast_to(images[:, :1, :1, :1], (images.shape[0], 92682, 92682, 1))
    return jnp.broadcast_to(big.sum(axis=(1, 2, 3))[:, None], (images.shape[0], 10))


def batch_bomb(images):
    """40 GB for one image, typed ``tensor<?x100000xf32>`` in the module: a broadcast to (batch * 100000,
    100000), whose size only shape refinement for a batch of one states."""
    import jax.numpy as jnp
    n = images.shape[0]
    big = jnp.broadcast_to(images.sum(), (n * 100000, 100000))
    return jnp.broadcast_to(big.sum(axis=1).reshape(n, 100000).sum(axis=1)[:, None], (n, 10))


@pytest.mark.backend("jax")
@pytest.mark.parametrize("forward, named", [(broadcast_bomb, "tensor<?x92682x92682x1xf32> of 34.4 GB"),
                                            (batch_bomb, "tensor<100000x100000xf32> of 40 GB")],
                         ids=["typed", "refined"])
def test_a_jax_export_whose_broadcast_asks_for_tens_of_gb_is_refused(native, tmp_path, forward, named):
    path = jax_export_of(forward, tmp_path / "bomb.jax_export", native("jax"))
    assert (path / "exported.bin").stat().st_size < 4096
    assert export_module("jax").findings(path) == [named]
    assert named in refusal("jax", path)
