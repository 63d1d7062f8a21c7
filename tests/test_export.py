"""Serving exports: every backend's native format and ONNX reload and match the live model; the ONNX files
of one set of canonical weights agree in ONNX Runtime and with the oracle; ``vgg predict`` on PNG files
matches ``predict`` on the arrays; bad files, images and missing packages get one clear line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from common.core import arch, canonical, layouts, tolerances
from common.data import batches
from common.serving import formats, onnx_files
from common.tools import cli, parity
from helpers import ACTIVE, REQUIRE_ALL, ROOT, load_backend
from tiny_data import HIDDEN

ARCH, SIZE = ((1, 4, (3, "lrn")), (2, 8, (3, 1))), 32  # with an LRN and a 1x1 convolution: every layer kind
if not REQUIRE_ALL:  # CI installs the export extra in both environments and must not skip these
    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install -e '.[export]'")


@pytest.fixture(scope="module")
def weights():
    return canonical.random_weights(ARCH, image_size=SIZE, seed=0, hidden=HIDDEN)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, weights):
    """Per backend: the model (canonical weights), its native export and its ONNX export."""
    folder = tmp_path_factory.mktemp("exports")
    out = {}
    for name in ACTIVE:
        vgg = load_backend(name)
        model = vgg.VGG(ARCH, image_size=SIZE, hidden=HIDDEN)
        vgg.import_weights(model, weights)
        files = {fmt: vgg.export(model, folder / f"{name}{formats.export_suffix(name, fmt)}", format=fmt)
                 for fmt in formats.FORMATS}
        out[name] = (vgg, model, files)
    return out


def images_for(vgg, seed: int = 3) -> np.ndarray:
    nchw, _ = tolerances.fixed_batch(ARCH, SIZE, batch=5, seed=seed)  # 5: not the batch of 2 used to trace
    return layouts.images_from_nchw(nchw, vgg.LAYOUT)


@pytest.mark.parametrize("name", ACTIVE)
def test_native_export_reloads_and_matches_the_live_model(exported, name):
    vgg, model, files = exported[name]
    forward, meta = vgg.load_exported(files["native"].path)
    x = images_for(vgg)
    assert tolerances.relative(forward(x), vgg.predict(model, x)) <= formats.TOLERANCE
    assert files["native"].difference <= formats.TOLERANCE
    assert meta["layout"] == vgg.LAYOUT and meta["backend"] == name and meta["format"] == "native"
    assert meta["classes"][9] == "ankle boot" and meta["config"]["image_size"] == SIZE


@pytest.mark.parametrize("name", ACTIVE)
def test_onnx_export_runs_in_onnx_runtime_and_matches_the_live_model(exported, name):
    vgg, model, files = exported[name]
    path = files["onnx"].path
    x = images_for(vgg)
    assert tolerances.relative(onnx_files.runner(path)(x), vgg.predict(model, x)) <= formats.TOLERANCE
    meta = onnx_files.read_metadata(path)
    assert meta["layout"] == vgg.LAYOUT and meta["input_shape"][0] == "batch"
    sess = onnx_files.session(path)
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, outp.name, inp.shape[0], outp.shape[0]) == ("images", "logits", "batch", "batch")


def test_the_onnx_files_of_one_set_of_weights_agree_with_each_other_and_the_oracle(exported, weights):
    images, _ = tolerances.fixed_batch(ARCH, SIZE, batch=5, seed=3)
    results = {parity.ORACLE: {"logits": parity.oracle_logits(weights, ARCH, images)}}
    for name, (vgg, _, files) in exported.items():
        results[name] = {"logits": onnx_files.runner(files["onnx"].path)(layouts.images_from_nchw(images, vgg.LAYOUT))}
    cells = parity.matrix(results, "logits")
    assert len(cells) == len(results) * (len(results) - 1)
    assert parity.passed({"logits": cells}), parity.format_matrix(cells, "logits")


def test_parity_onnx_command_prints_an_all_pass_matrix(capsys, tmp_path):
    name = ACTIVE[0]
    load_backend(name)
    status = cli.main(["parity", "--onnx", "--backends", name, "--arch", "tiny", "--resize", "32",
                       "--hidden", str(HIDDEN), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"{name}.onnx" in out and "numpy" in out and "all pass" in out
    assert (tmp_path / f"{name}.onnx").is_file()


def test_predict_from_canonical_weights_takes_the_head_width_from_the_file(tmp_path, capsys):
    """A .safetensors has no config: --backend, --arch and --resize describe the blocks, and the file's own
    first dense layer the width of the head."""
    from PIL import Image
    name = ACTIVE[0]
    vgg = load_backend(name)
    model = vgg.VGG(arch.TINY, image_size=32, hidden=HIDDEN)
    path = vgg.save_weights(model, tmp_path / "w.safetensors")
    pixels = np.random.default_rng(2).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(tmp_path / f"{i}.png")
    assert cli.main(["predict", "--model", str(path), "--backend", name, "--arch", "tiny", "--resize", "32",
                     *map(str, sorted(tmp_path.glob("*.png"))), "--json", "--top", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = vgg.predict(model, layouts.with_channels(batches.to_float(pixels, 32), vgg.LAYOUT)).argmax(1)
    assert [r["top"][0]["index"] for r in rows] == list(want)


@pytest.mark.slow
@pytest.mark.parametrize("name", ACTIVE)
def test_predict_on_png_files_gives_the_top1_of_predict_on_the_array(exported, name, tmp_path, capsys):
    from PIL import Image
    vgg, model, files = exported[name]
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(tmp_path / f"{i}.png")
    model_file = vgg.save(model, tmp_path / f"model{vgg.MODEL_SUFFIX}")
    x = layouts.with_channels(batches.to_float(pixels, SIZE), vgg.LAYOUT)
    for path, want in ((model_file, vgg.predict(model, x)), (files["native"].path, vgg.predict(model, x)),
                       (files["onnx"].path, onnx_files.runner(files["onnx"].path)(x))):
        assert cli.main(["predict", "--model", str(path), str(tmp_path), "--json", "--top", "1",
                         "--batch-size", "4"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["file"] for r in rows] == [str(tmp_path / f"{i}.png") for i in range(6)]
        assert [r["top"][0]["index"] for r in rows] == list(want.argmax(1)), path


def _error(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"vgg {argv[0]}: error: "), err
    return err


@pytest.mark.slow
def test_bad_model_files_get_one_line(exported, tmp_path, capsys):
    name = ACTIVE[0]
    vgg, model, files = exported[name]
    png = tmp_path / "a.png"
    from PIL import Image
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(png)
    assert "unknown model suffix" in _error(capsys, "predict", "--model", str(tmp_path / "m.h5"), str(png))
    assert "no such file" in _error(capsys, "predict", "--model", str(tmp_path / "none.onnx"), str(png))
    for source in (files["onnx"].path, vgg.save(model, tmp_path / f"m{vgg.MODEL_SUFFIX}")):
        cut = tmp_path / f"cut{source.name[1:] if source.name.startswith('m') else source.suffix}"
        cut.write_bytes(source.read_bytes()[:5000])
        assert "not a readable" in _error(capsys, "predict", "--model", str(cut), str(png))
    weights = vgg.save_weights(model, tmp_path / "w.safetensors")
    assert "need --backend" in _error(capsys, "export", "--model", str(weights))
    trained = tmp_path / f"m{vgg.MODEL_SUFFIX}"
    assert f"must be named *{formats.ONNX}" in _error(capsys, "export", "--model", str(trained), "--format", "onnx",
                                                      "--out", str(tmp_path / "x.pt2"))


@pytest.mark.slow
def test_bad_images_and_ill_fitting_onnx_files_get_one_line(exported, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper
    files = exported[ACTIVE[0]][2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert "cannot be decoded" in _error(capsys, "predict", "--model", str(files["onnx"].path), str(broken))
    assert "no such file" in _error(capsys, "predict", "--model", str(files["onnx"].path), str(tmp_path / "x.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no image files" in _error(capsys, "predict", "--model", str(files["onnx"].path), str(empty))
    flat = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 784])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 784])]), ir_version=8,
        opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(flat, tmp_path / "flat.onnx")
    png = tmp_path / "a.png"
    from PIL import Image
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(png)
    assert "is not one batch of square images" in _error(capsys, "predict", "--model", str(tmp_path / "flat.onnx"),
                                                         str(png))


@pytest.mark.parametrize("folder", [False, True], ids=["file", "folder"])
def test_an_export_that_reloads_differently_writes_nothing_and_keeps_the_previous_one(folder, tmp_path):
    """The shared flow with a writer of either shape and a reload that comes back 1e-3 off."""
    from common.serving import export_flow
    name = ACTIVE[0]
    vgg = load_backend(name)
    model = vgg.VGG(ARCH, image_size=SIZE, hidden=HIDDEN)
    target = tmp_path / f"m{formats.export_suffix(name, 'native')}"
    target.write_bytes(b"the previous export")

    def write(tmp, meta):
        if folder:
            tmp.mkdir()
            (tmp / formats.METADATA_FILE).write_text(formats.dumps(meta))
        else:
            tmp.write_text(formats.dumps(meta))

    live = lambda x: vgg.predict(model, x)  # noqa: E731
    with pytest.raises(export_flow.ExportError, match="nothing was written"):
        export_flow.run(model, target, "native", name, vgg.LAYOUT, {"native": write},
                        lambda _: lambda x: live(x) * 1.001, live)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert target.read_bytes() == b"the previous export"
    done = export_flow.run(model, target, "native", name, vgg.LAYOUT, {"native": write}, lambda _: live, live)
    assert done.difference == 0 and target.is_dir() == folder
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.slow
def test_a_missing_export_package_is_named_with_its_extra(tmp_path):
    """The real import machinery, told the package is absent, as on a machine without the extra."""
    name = ACTIVE[0]
    code = ("import sys; sys.modules['onnxruntime'] = None; from common.tools import cli; "
            f"sys.exit(cli.main(['parity', '--onnx', '--backends', '{name}', '--arch', 'tiny', '--resize', '32', "
            f"'--hidden', '{HIDDEN}']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "onnxruntime" in last and "pip install -e '.[export]'" in last, last
