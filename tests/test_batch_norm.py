"""Batch normalisation: torchvision's names and counts, one meaning in every backend (eval and training mode,
running statistics) against the NumPy oracle, builders, files, and refusals of weights that do not fit."""

from __future__ import annotations

import numpy as np
import pytest

from common.core import arch, canonical, layouts, summary, tolerances
from common.core.arch import ArchError
from common.core.config import ModelConfig
from common.tools import cli, parity
from helpers import with_reference
from tiny_data import HIDDEN

BLOCKS = ((1, 8), (2, 16, (3, 1)))  # a 3x3 and a 1x1 convolution, each with its batch norm
SIZE = 32


def test_torchvision_names_and_counts():
    """torchvision 0.28's vgg*_bn: parameter counts, and vgg16_bn's state_dict layout (conv i, batch norm
    i + 1, ReLU i + 2, pools between blocks; five tensors per batch norm, the counter int64 and 0-d)."""
    counts = {name: summary.parameter_count(*arch.BUILDERS[name][:1], 3, 224, 1000, batch_norm=True)
              for name in ("vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn")}
    assert counts == {"vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992,
                      "vgg19_bn": 143_678_248}
    shapes = canonical.expected_shapes(arch.VGG16, 3, 224, 1000, batch_norm=True)
    convs = [int(k.split(".")[1]) for k, s in shapes.items() if k.startswith("features.") and len(s) == 4]
    norms = [int(k.split(".")[1]) for k in shapes if k.endswith(".running_mean")]
    assert convs == [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    assert norms == [c + 1 for c in convs]
    assert [k for k in shapes if k.startswith("features.1.")] == [
        f"features.1.{t}" for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    assert shapes["features.1.num_batches_tracked"] == () and shapes["features.41.running_var"] == (512,)
    assert len(shapes) == 97  # torchvision's vgg16_bn state_dict has 97 entries


def test_names_and_refusals():
    assert arch.parse("small_bn") == (arch.small(), True) and arch.parse("vgg16") == (arch.VGG16, False)
    assert arch.parse("C_bn") == (arch.C, True) and "vgg19_bn" in arch.CHOICES and "A_LRN_bn" not in arch.CHOICES
    with pytest.raises(ArchError, match="the paper's A-LRN has no batch norm"):
        arch.parse("A_LRN_bn")
    with pytest.raises(ArchError, match="unknown arch 'vgg12_bn'"):
        arch.parse("vgg12_bn")
    with pytest.raises(ArchError, match="batch_norm must be True or False, got 'yes'"):
        arch.check_model_args(arch.small(), 10, 1, 32, 0.5, "yes")


def test_builders(backend):
    names = [n for n in dir(backend) if n.startswith("vgg") and n[3:5].isdigit()]
    assert sorted(names) == sorted(arch.BUILDERS)
    for name in ("vgg11", "vgg11_bn"):
        model = getattr(backend, name)(image_size=32, num_classes=7, hidden=HIDDEN)
        assert (model.arch, model.batch_norm, model.num_classes, model.hidden) == (*arch.BUILDERS[name], 7, HIDDEN)
        assert backend.parameter_count(model) == summary.parameter_count(arch.VGG11, 1, 32, 7, model.batch_norm,
                                                                         HIDDEN)


def test_backend_refuses_lrn_with_batch_norm(backend):
    with pytest.raises(ArchError, match="not a VGG"):
        backend.VGG(arch.small(arch.A_LRN, 8), image_size=32, batch_norm=True)
    with pytest.raises(ArchError, match="not a VGG"):
        backend.vgg_block(1, 8, layers=(3, "lrn"), batch_norm=True)


def test_batch_norm_means_the_same_everywhere(backend, reference):
    """From one set of weights and running statistics: eval-mode logits (running statistics) and training-mode
    logits (the batch's) against the oracle and pairwise; gradients in both modes and three SGD steps pairwise;
    running statistics after one training forward and after three compiled training steps at lr 0 (weights
    held, so the oracle can follow) against the oracle."""
    backends = with_reference(backend, reference)
    matrices = parity.run(backends, ModelConfig(BLOCKS, image_size=SIZE, batch_norm=True, hidden=HIDDEN), batch=4,
                          steps=3)
    assert parity.passed(matrices), {q: max(c.values()) for q, c in matrices.items()}
    for quantity in ("logits", "train logits", "running statistics", "statistics after steps"):
        assert sum(parity.ORACLE in pair for pair in matrices[quantity]) == 2 * len(backends), quantity


def test_running_statistics_survive_save_and_load(backend, tmp_path):
    model = backend.VGG(BLOCKS, image_size=SIZE, batch_norm=True, hidden=HIDDEN)
    images, labels = tolerances.fixed_batch(BLOCKS, SIZE, 4)
    backend.training_outputs(model, layouts.images_from_nchw(images, backend.LAYOUT), labels)  # stats leave (0, 1)
    before = backend.export_weights(model)
    assert before["features.1.num_batches_tracked"] == 1 and not np.allclose(before["features.1.running_var"], 1)
    again = backend.load(backend.save(model, tmp_path / f"m{backend.MODEL_SUFFIX}"))
    after = backend.export_weights(again)
    assert again.batch_norm and all(np.array_equal(before[k], after[k]) for k in before)
    other = backend.VGG(BLOCKS, image_size=SIZE, batch_norm=True, seed=5, hidden=HIDDEN)  # and a safetensors file
    backend.load_weights(other, backend.save_weights(model, tmp_path / "w.safetensors"))
    after = backend.export_weights(other)
    assert all(np.array_equal(before[k], after[k]) and before[k].shape == after[k].shape for k in before)


@pytest.mark.parametrize("change, message", [
    ("plain into bn", "the model has batch norm and they have none"),
    ("bn into plain", r"they have batch norm \(features.1.running_mean ...\) and the model has none"),
    ("drop running_var", "missing: features.1.running_var"),
    ("reshape running_mean", r"mis-shaped: features.5.running_mean \(3,\) \(expected \(16,\)\)"),
    ("float counter", "wrong type: features.1.num_batches_tracked float32 \\(expected int64\\)"),
])
def test_weights_that_do_not_fit_are_refused(backend, change, message):
    model = backend.VGG(BLOCKS, image_size=SIZE, batch_norm=change != "bn into plain", hidden=HIDDEN)
    before = backend.export_weights(model)
    weights = canonical.random_weights(BLOCKS, image_size=SIZE, batch_norm=change != "plain into bn", hidden=HIDDEN)
    if change == "drop running_var":
        del weights["features.1.running_var"]
    elif change == "reshape running_mean":
        weights["features.5.running_mean"] = weights["features.5.running_mean"][:3]
    elif change == "float counter":
        weights["features.1.num_batches_tracked"] = np.float32(3)
    with pytest.raises(canonical.WeightsError, match=message):
        backend.import_weights(model, weights)
    after = backend.export_weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing changed


def test_summary_lists_batch_norms(capsys):
    assert cli.main(["summary", "--arch", "vgg16_bn", "--flops", "--in-channels", "3", "--num-classes", "1000"]) == 0
    out = capsys.readouterr().out
    assert "| batchnorm (block 1) | features.1 | (64, 224, 224) | 128 | 6,422,528 |" in out
    assert "| all (29) | 138,365,992 | 100 % |" in out


def test_native_export_keeps_batch_norm(backend, tmp_path):
    """The framework's own deployable file (torch.export, SavedModel, jax.export, Gluon symbol) of a batch-norm
    model: eval mode with the running statistics baked in, reloaded and checked against the live model."""
    from common.serving import formats

    model = backend.VGG(BLOCKS, image_size=SIZE, batch_norm=True, hidden=HIDDEN)
    backend.import_weights(model, canonical.random_weights(BLOCKS, image_size=SIZE, batch_norm=True, seed=2,
                                                           hidden=HIDDEN))
    done = backend.export(model, tmp_path / f"m{formats.NATIVE[backend.__name__[4:]]}")
    assert done.difference <= formats.TOLERANCE and done.checked > 0


def test_every_configuration_and_its_bn_variant_has_the_analytic_shapes_and_counts(backend):
    """Table 1's configurations (channels / 16, a narrow head: quick) with and without batch norm: layer shapes and
    parameter counts against common's analysis, which the 224x224 figures above come from."""
    for name, config in arch.CONFIGS.items():
        blocks = arch.small(config, 16)
        for batch_norm in (False, True) if name != "A_LRN" else (False,):
            model = backend.VGG(blocks, num_classes=1000, in_channels=3, image_size=32, batch_norm=batch_norm,
                                hidden=HIDDEN)
            rows = backend.layer_summary(model, layouts.shape_from_nchw((1, 3, 32, 32), backend.LAYOUT))
            got = [(kind, layouts.shape_to_nchw(s, backend.LAYOUT)) for kind, s in rows]
            assert got == summary.expected_summary(blocks, (1, 3, 32, 32), 1000, HIDDEN), (name, batch_norm)
            assert backend.parameter_count(model) == summary.parameter_count(blocks, 3, 32, 1000, batch_norm,
                                                                             HIDDEN), (name, batch_norm)
