"""Shape parity: every backend's layers, parameters and errors against common's analytical truth."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from common.core import arch, backends, layouts, summary
from common.core.arch import ArchError
from tiny_data import HIDDEN

CASES = [  # (arch, image size, in_channels, num_classes, hidden): the paper's 4096-wide head once, narrower
    (arch.VGG11, 224, 1, 10, arch.HIDDEN),  # heads elsewhere (the head's shapes do not depend on the blocks)
    (arch.small(), 224, 1, 10, HIDDEN),
    (arch.small(), 96, 1, 10, HIDDEN),
    (arch.small(), 56, 1, 10, HIDDEN),
    (arch.VGG16, 224, 3, 1000, 256),
    (arch.VGG19, 224, 3, 1000, 256),
]
IDS = ["vgg11-224", "small-224", "small-96", "small-56", "vgg16-224", "vgg19-224"]  # every configuration, and
# with batch norm: tests/test_batch_norm.py


def test_book_table_for_vgg11():
    rows = summary.expected_summary(arch.VGG11, (1, 1, 224, 224))
    assert [shape for kind, shape in rows if kind == "block"] == [
        (1, 64, 112, 112), (1, 128, 56, 56), (1, 256, 28, 28), (1, 512, 14, 14), (1, 512, 7, 7)]
    assert rows[5] == ("flatten", (1, 25088))
    assert [kind for kind, _ in rows[5:]] == list(summary.HEAD_KINDS)
    assert rows[-1] == ("dense", (1, 10))


def test_published_parameter_counts():
    # torchvision / Keras applications: VGG-16 138,357,544 and VGG-19 143,667,240 parameters
    assert summary.parameter_count(arch.VGG16, 3, 224, 1000) == 138_357_544
    assert summary.parameter_count(arch.VGG19, 3, 224, 1000) == 143_667_240
    assert summary.parameter_count(arch.VGG11, 3, 224, 1000) == 132_863_336


def test_table_1_configurations():
    """Simonyan & Zisserman 2014, Table 2: A 133 M, B 133 M, C 134 M, D 138 M, E 144 M parameters; C is D with
    the last convolution of blocks 3-5 at 1x1, and A, B, D, E are torchvision's vgg11/13/16/19."""
    counts = {name: summary.parameter_count(arch.by_name(name), 3, 224, 1000) for name in arch.CONFIGS}
    assert counts == {"A": 132_863_336, "A_LRN": 132_863_336, "B": 133_047_848, "C": 133_638_952, "D": 138_357_544,
                      "E": 143_667_240}
    assert arch.validate(arch.C)[2] == (3, 256, (3, 3, 1)) and arch.kernel_sizes(arch.C[0]) == (3, 3)
    assert [arch.by_name(n) for n in ("A", "B", "D", "E")] == [arch.VGG11, arch.VGG13, arch.VGG16, arch.VGG19]
    assert arch.validate(((2, 8, (3, 3)),)) == ((2, 8),)  # all 3x3 is the book's pair
    assert arch.small(arch.C, 8)[2] == (3, 32, (3, 3, 1))
    assert counts["A"] == summary.parameter_count(arch.A_LRN, 3, 224, 1000)  # LRN has no weights ...
    assert [x.name for x in summary.weighted_layers(arch.A_LRN)][:3] == [  # ... but a place in the numbering
        "features.0", "features.4", "features.7"]
    layer = summary.weighted_layers(arch.C, 3, 224, 1000)[6]  # block 3's 1x1 convolution
    assert (layer.name, layer.shape, layer.flops) == ("features.14", (256, 256, 1, 1), 2 * 256 * 256 * 56 * 56)


def test_flops_of_the_small_net():
    layers = summary.weighted_layers(arch.small(), 1, 224, 10)
    assert [layer.name for layer in layers] == [
        "features.0", "features.3", "features.6", "features.8", "features.11", "features.13",
        "features.16", "features.18", "classifier.0", "classifier.3", "classifier.6"]
    assert layers[0].flops == 2 * 9 * 1 * 16 * 224 * 224
    assert summary.flop_count(arch.small(), 1, 224, 10) == sum(layer.flops for layer in layers)
    assert summary.flop_count(arch.small(), training=True) == pytest.approx(3.07e9, rel=1e-2)


def test_small_divides_channels():
    assert arch.small() == ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))
    assert arch.small(arch.VGG16, 2) == ((2, 32), (2, 64), (3, 128), (3, 256), (3, 256))


@pytest.mark.parametrize("args, message", [
    ((), "arch is empty"),
    (((0, 64),), "num_convs=0"),
    (((1, -3),), "out_channels=-3"),
    (((1, 2.5),), "out_channels=2.5"),
    (((1, 64, 3),), "has layers 3: expected 1 kernel size(s)"),
    (((2, 64, (3, 5)),), "has layers (3, 5): expected 2 kernel size(s) of 1 or 3"),
    (((2, 64, (1,)),), "has layers (1,): expected 2 kernel size(s) of 1 or 3"),
    (((1, 64, 3, 3),), "expected a (num_convs, out_channels) pair, or (num_convs, out_channels, layers)"),
    (((1, 64, ("lrn", 3)),), "expected 1 kernel size(s) of 1 or 3, each convolution optionally followed by 'lrn'"),
    (((1, 64, (3, "lrn", "lrn")),), "optionally followed by 'lrn'"),
])
def test_arch_validation(args, message):
    with pytest.raises(ArchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        arch.validate(args)


def test_ratio_that_zeroes_channels():
    with pytest.raises(ArchError, match="ratio 128 rounds the 64 channels"):
        arch.small(arch.VGG11, 128)


def test_resolution_too_small_names_arch_and_minimum():
    with pytest.raises(ArchError, match=r"vgg11 has 5 blocks.*28x28.*smallest resolution that works is 32x32"):
        arch.check_resolution(arch.VGG11, 28)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_summary_matches_analytic_truth(backend, case):
    blocks, size, channels, classes, hidden = case
    model = backend.VGG(blocks, num_classes=classes, in_channels=channels, image_size=size, hidden=hidden)
    shape = layouts.shape_from_nchw((1, channels, size, size), backend.LAYOUT)
    rows = backend.layer_summary(model, shape)
    got = [(kind, layouts.shape_to_nchw(s, backend.LAYOUT)) for kind, s in rows]
    assert got == summary.expected_summary(blocks, (1, channels, size, size), classes, hidden)
    assert backend.parameter_count(model) == summary.parameter_count(blocks, channels, size, classes, hidden=hidden)


def test_small_net_layers_match_the_analytic_table(backend):
    """The small net at 56x56 gives the analytic layer table in every backend (so all four agree)."""
    blocks = arch.small()
    model = backend.VGG(blocks, image_size=56, hidden=HIDDEN)
    rows = backend.layer_summary(model, layouts.shape_from_nchw((2, 1, 56, 56), backend.LAYOUT))
    got = [(kind, layouts.shape_to_nchw(s, backend.LAYOUT)) for kind, s in rows]
    assert got == summary.expected_summary(blocks, (2, 1, 56, 56), 10, HIDDEN)


def test_vgg_block_shapes(backend):
    block = backend.vgg_block(2, 8, in_channels=3)
    x_shape = layouts.shape_from_nchw((2, 3, 16, 16), backend.LAYOUT)
    out = block(_zeros(backend.__name__, x_shape))
    assert layouts.shape_to_nchw(tuple(out.shape), backend.LAYOUT) == (2, 8, 8, 8)


def _zeros(module: str, shape):
    """A zero batch in the backend's own array type."""
    if module == "vgg_torch":
        return __import__("torch").zeros(shape)
    if module == "vgg_mxnet":
        return __import__("mxnet").np.zeros(shape)
    return np.zeros(shape, np.float32)  # Keras and JAX layers take NumPy input


@pytest.mark.parametrize("kwargs, message", [
    (dict(arch=()), "arch is empty"),
    (dict(arch=((1, 0),)), "out_channels=0"),
    (dict(arch=arch.VGG11, image_size=28), "smallest resolution that works is 32x32"),
    (dict(arch=arch.small(), num_classes=0), "num_classes must be a positive integer"),
    (dict(arch=arch.small(), dropout=1.5), "dropout must be a probability"),
    (dict(arch=arch.small(), hidden=0), "hidden must be a positive integer, got 0"),
])
def test_backend_rejects_bad_config(backend, kwargs, message):
    kwargs.setdefault("image_size", 32)
    with pytest.raises(ArchError, match=message):
        backend.VGG(**kwargs)


def test_wrong_input_layout_is_named(backend):
    model = backend.VGG(arch.small(), image_size=32, hidden=HIDDEN)
    other = layouts.shape_from_nchw((1, 1, 32, 32), "NHWC" if backend.LAYOUT == "NCHW" else "NCHW")
    with pytest.raises(ValueError, match=f"that is .*; this backend takes {backend.LAYOUT}"):
        backend.layer_summary(model, other)


def test_print_layer_summary(backend, capsys):
    model = backend.VGG(arch.small(), image_size=32, hidden=HIDDEN)
    backend.print_layer_summary(model, layouts.shape_from_nchw((1, 1, 32, 32), backend.LAYOUT))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 13 and lines[0].startswith("block") and lines[-1].startswith("dense")


@pytest.mark.parametrize("name, python, message", [
    ("mxnet", (3, 13), "MXNet 1.9.1 needs NumPy 1, which has no wheels for Python 3.13+ (this is 3.13)"),
    ("jax", (3, 10), "JAX 0.7+ and Flax 0.12+ need Python 3.11 or newer (this is 3.10)"),
    ("tf", (3, 10), "Keras 3.13+ needs Python 3.11 or newer (this is 3.10)"),
    ("mxnet", (3, 12), "install it with: pip install -e '.[mxnet]'"),
    ("jax", (3, 13), "install it with: pip install -e '.[jax]'"),
])
def test_a_missing_backend_says_how_to_install_it_or_why_not_on_this_python(name, python, message):
    assert message in backends.install_hint(name, python)


def test_summary_flops_prints_layers_and_the_conv_dense_split(capsys):
    from common.tools import cli
    assert cli.main(["summary", "--arch", "C", "--flops", "--in-channels", "3", "--num-classes", "1000"]) == 0
    out = capsys.readouterr().out
    assert "| conv1-256 (block 3) | features.14 | (256, 56, 56) | 65,792 | 411,041,792 |" in out
    assert "| fc-1000 | classifier.6 | (1000,) | 4,097,000 | 8,192,000 |" in out
    assert "| all (16) | 133,638,952 | 100 % |" in out and "| convolutional (13) |" in out
    assert cli.main(["summary", "--family", "--in-channels", "3", "--num-classes", "1000"]) == 0
    out = capsys.readouterr().out
    assert "| C | 16 | 3 | 133,638,952 |" in out and "| A_LRN | 11 | 0 | 132,863,336 | — |" in out
    assert "| E | 19 | 0 | 143,667,240 | 143,678,248 | 39.26 | 39.29 |" in out  # torchvision's vgg19(_bn)
    assert cli.main(["summary", "--arch", "tiny", "--resize", "32", "--flops", "--hidden", "64"]) == 0
    out = capsys.readouterr().out  # tiny at 32: 16 x 8 x 8 features into 64, then 64 into 10
    assert "| fc-64 | classifier.0 | (64,) | 65,600 |" in out and "| fc-10 | classifier.6 | (10,) | 650 |" in out


@pytest.mark.slow
@pytest.mark.backend("tf")
def test_importing_tensorflow_prints_nothing_on_a_machine_without_a_gpu():
    """TensorFlow's start-up lines and its CUDA probe's 'failed call to cuInit' error stay off stderr; a line
    of its own (here Python's) still gets through."""
    code = "import sys, vgg_tf; print('after', file=sys.stderr)"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and proc.stderr == "after\n", proc.stderr[-2000:]
