"""The GPU path, on a machine that has one (``pytest -m gpu``; benchmarks/gpu_check.sh runs it): models,
batches and the loss on the device, parity against the float64 oracle with TensorFloat-32 off, and a
mixed-precision step. Without a visible GPU every test here skips with the reason."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from common.core import arch, canonical, layouts, oracle, precision, tolerances
from common.core.precision import PrecisionWarning
from common.runtime.training import Recipe
from tiny_data import HIDDEN

pytestmark = pytest.mark.gpu
GPU_BACKENDS = ("torch", "jax")  # TensorFlow's GPU build is not what `pip install tensorflow` gives here


def _gpu(backend) -> None:
    if backend.NAME not in GPU_BACKENDS:
        pytest.skip(f"{backend.NAME}: its GPU path is not part of this check")
    if backend.NAME == "torch":
        import torch
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device visible to torch")
    else:
        import jax
        if not [d for d in jax.devices() if d.platform == "gpu"]:
            pytest.skip("no GPU visible to JAX")


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_logits_on_the_gpu_match_the_oracle(backend, name):
    """fp32 on a GPU means float32 (TF32 off): within float32's tolerance of float64; bf16 within its bound
    of the rounding oracle."""
    _gpu(backend)
    if backend.NAME == "torch":
        backend.init_distributed(device="gpu")
    blocks = arch.small()
    weights = canonical.random_weights(blocks, image_size=32, seed=2, hidden=HIDDEN)
    images = tolerances.fixed_batch(blocks, 32, 8)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        model = backend.VGG(blocks, image_size=32, hidden=HIDDEN, dropout=0.0, precision=name)
    backend.import_weights(model, weights)
    logits = backend.predict(model, layouts.images_from_nchw(images, backend.LAYOUT))
    expected = oracle.forward(dict(weights), blocks, images, precision=name)
    assert tolerances.relative(logits, expected) <= precision.bounds(name)["logits"]


def test_a_training_step_runs_on_the_gpu(backend):
    _gpu(backend)
    if backend.NAME == "torch":
        backend.init_distributed(device="gpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        model = backend.VGG(arch.TINY, image_size=32, hidden=HIDDEN, precision="bf16")
    engine = backend.Engine(model, Recipe(batch_size=8, momentum=0.9))
    engine.reseed(0)
    images, labels = tolerances.fixed_batch(arch.TINY, 32, 8)
    loss, _ = engine.step(*backend.to_tensor(layouts.images_from_nchw(images, backend.LAYOUT), labels), 0.01)
    assert np.isfinite(loss)
    if backend.NAME == "torch":
        assert next(model.parameters()).is_cuda


def test_exports_answer_on_the_gpu(backend, tmp_path):
    """`vgg predict --device gpu` on a native export (and on ONNX where ONNX Runtime has CUDA): the logits
    of the live model, within the exports' tolerance."""
    _gpu(backend)
    from common.serving import formats, onnx_files
    from common.tools import models
    model = backend.VGG(arch.TINY, image_size=32, hidden=HIDDEN, dropout=0.0)
    nchw = tolerances.fixed_batch(arch.TINY, 32, 8)[0]
    expected = backend.predict(model, layouts.images_from_nchw(nchw, backend.LAYOUT))
    paths = [backend.export(model, tmp_path / f"m{formats.NATIVE[backend.NAME]}").path]
    ort = pytest.importorskip("onnxruntime")
    if onnx_files.PROVIDERS["gpu"] in ort.get_available_providers():
        paths.append(backend.export(model, tmp_path / "m.onnx", format="onnx").path)
    for path in paths:
        opened = models.open_model(path, device="gpu")
        logits = opened.forward(layouts.images_from_nchw(nchw, opened.layout))
        assert tolerances.relative(logits, expected) <= formats.TOLERANCE, path
