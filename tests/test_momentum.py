"""Momentum means torch.optim.SGD's in every backend, under any schedule (issue 24): from the same weights
on the same batches, SGD with momentum and a changing lr (warm-up, then decay) ends where torch's does,
and an MXNet run resumed from its ``state()`` continues exactly as the uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest

from common.core import arch, canonical, layouts, tolerances
from common.runtime import training
from conftest import ACTIVE, load_backend
from tiny_data import HIDDEN

SIZE, BATCH = 32, 8
LRS = (0.01, 0.03, 0.05, 0.04, 0.02, 0.01)  # warm-up, then decay: every step another lr
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4
#: float32 rounding only; an lr-scaled momentum state (MXNet's own SGD) is 1e-1 off after these steps
TOLERANCE = 1e-5


def engine(vgg, momentum: float = MOMENTUM):
    model = vgg.VGG(arch.TINY, image_size=SIZE, dropout=0.0, hidden=HIDDEN)
    vgg.import_weights(model, canonical.random_weights(arch.TINY, image_size=SIZE, seed=0, hidden=HIDDEN))
    recipe = training.Recipe(lr=max(LRS), momentum=momentum, weight_decay=WEIGHT_DECAY, batch_size=BATCH)
    run = vgg.Engine(model, recipe)
    run.reseed(0)
    return model, run


def take(vgg, run, steps: range) -> None:
    for i in steps:
        images, labels = tolerances.fixed_batch(arch.TINY, SIZE, BATCH, seed=1 + i)
        run.step(*vgg.to_tensor(layouts.images_from_nchw(images, vgg.LAYOUT), labels), LRS[i])


def trained(vgg, momentum: float = MOMENTUM) -> dict[str, np.ndarray]:
    model, run = engine(vgg, momentum)
    take(vgg, run, range(len(LRS)))
    return vgg.export_weights(model)


@pytest.fixture(scope="module")
def torch_sgd() -> dict[float, dict[str, np.ndarray]]:
    """torch.optim.SGD's weights after the steps (the torch backend's Engine), per momentum."""
    vgg = load_backend("torch")
    return {m: trained(vgg, m) for m in (MOMENTUM, 0.0)}


@pytest.mark.parametrize("momentum", [MOMENTUM, 0.0])
@pytest.mark.parametrize("name", [n for n in ACTIVE if n != "torch"])
def test_sgd_with_a_changing_lr_is_torchs(name, momentum, torch_sgd):
    start = canonical.random_weights(arch.TINY, image_size=SIZE, seed=0, hidden=HIDDEN)
    reference = torch_sgd[momentum]
    assert tolerances.relative_tree(reference, start) > 100 * TOLERANCE  # the steps moved the weights
    diff = tolerances.relative_tree(reference, trained(load_backend(name), momentum))
    assert diff <= TOLERANCE, f"{name} vs torch.optim.SGD: {diff:.1e}"


def resumed(vgg, arrays: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """A fresh engine loads ``arrays`` and takes the steps after the first ``k``."""
    model, run = engine(vgg)
    run.load_state(arrays)
    take(vgg, run, range(k, len(LRS)))
    return vgg.export_weights(model)


@pytest.mark.backend("mxnet")
@pytest.mark.parametrize("k", [1, 3])
def test_mxnet_resumes_exactly(k):
    vgg = load_backend("mxnet")
    straight = trained(vgg)
    model, run = engine(vgg)
    take(vgg, run, range(k))
    arrays = run.state()
    assert any(key.endswith(".momentum") for key in arrays)
    again = resumed(vgg, arrays, k)
    for key, value in straight.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)


@pytest.mark.backend("mxnet")
def test_mxnet_loads_a_checkpoint_written_before_issue_24():
    """An old checkpoint's momentum buffers are MXNet's lr-scaled states with no lr beside them: they are
    taken as scaled for the first lr after the resume (what the old engine did with them)."""
    vgg = load_backend("mxnet")
    k = 2
    model, run = engine(vgg)
    take(vgg, run, range(k))
    arrays = run.state()
    assert arrays["optimizer.lr"] == LRS[k - 1]  # the lr the states are scaled for
    old = {key: value for key, value in arrays.items() if key != "optimizer.lr"}
    from_old = resumed(vgg, old, k)
    as_documented = resumed(vgg, {**old, "optimizer.lr": np.asarray(LRS[k], np.float64)}, k)
    no_momentum = resumed(vgg, {key: value for key, value in old.items() if key.startswith("model.")}, k)
    for key, value in as_documented.items():
        np.testing.assert_array_equal(from_old[key], value, err_msg=key)
    assert tolerances.relative_tree(from_old, no_momentum) > 100 * TOLERANCE  # the old buffers were used
    straight = trained(vgg)
    assert tolerances.relative_tree(from_old, straight) < tolerances.relative_tree(no_momentum, straight)
