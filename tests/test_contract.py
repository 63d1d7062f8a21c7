"""The backend contract (common/runtime/contract.py) and the model config (common/core/config.py): every
backend provides the same names with the same meaning, and a model is its config."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from common.core import arch, backends, layouts, tolerances
from common.core.config import ConfigError, ModelConfig
from common.runtime import contract
from common.runtime.training import Recipe
from helpers import ROOT
from tiny_data import HIDDEN


def test_a_backend_exports_exactly_the_contract(backend):
    assert sorted(backend.__all__, key=str.lower) == sorted(contract.NAMES, key=str.lower)
    missing = [n for n in contract.NAMES if not hasattr(backend, n)]
    assert not missing, f"{backend.__name__} lacks {missing}"
    info = backends.BACKENDS[backend.NAME]
    assert (backend.__name__, backend.LAYOUT, backend.MODEL_SUFFIX) == (info.package, info.layout, info.trained_suffix)


@pytest.mark.slow
def test_the_framework_hooks_work(backend):
    """Thread settings come before any work (TensorFlow refuses them after), so they run in a fresh process."""
    code = (f"import numpy as np, {backend.__name__} as vgg\n"
            "vgg.set_threads(1)\n"
            "a = np.arange(16, dtype=np.float32).reshape(4, 4) / 16\n"
            "vgg.matmul(a)()\n"  # runs to completion (what it returns is the framework's own)
            "vgg.matmul(a, 'cpu', 'fp32')()\n"
            "print(vgg.device_name('cpu'))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "cpu", proc.stderr[-2000:]
    model = backend.VGG(arch.TINY, image_size=32, hidden=HIDDEN)
    engine = backend.Engine(model, Recipe(batch_size=4))
    assert backend.communication_timer(engine)() is None  # one process: nothing to report
    forward, step = backend.step_split(engine)  # vgg compare's step split: both run to completion
    nchw, labels = tolerances.fixed_batch(arch.TINY, 32)
    batch = backend.to_tensor(layouts.images_from_nchw(nchw, backend.LAYOUT), labels)
    assert np.isfinite(forward(*batch)) and np.isfinite(step(*batch, 0.01)[0])


def test_a_model_carries_its_config_and_is_built_again_from_it(backend, tmp_path):
    model = backend.VGG(arch.TINY, image_size=32, dropout=0.25, seed=3, hidden=HIDDEN)
    config = model.config
    assert config == ModelConfig(arch.TINY, image_size=32, dropout=0.25, seed=3, hidden=HIDDEN)
    assert (model.arch, model.image_size, model.hidden, model.seed) == (arch.TINY, 32, HIDDEN, 3)
    again = backend.VGG(config)
    x = layouts.images_from_nchw(tolerances.fixed_batch(arch.TINY, 32)[0], backend.LAYOUT)
    assert np.array_equal(backend.predict(model, x), backend.predict(again, x))  # the same seed, the same weights
    assert backend.VGG(config, seed=4).config.seed == 4
    loaded = backend.load(backend.save(model, tmp_path / f"m{backend.MODEL_SUFFIX}"))
    assert loaded.config == config


def test_building_a_model_leaves_the_global_generators_alone(backend):
    random.seed(5)
    np.random.seed(5)
    expected = (random.random(), np.random.rand())
    random.seed(5)
    np.random.seed(5)
    backend.VGG(arch.TINY, image_size=32, seed=9, hidden=HIDDEN)
    assert (random.random(), np.random.rand()) == expected


def test_the_config_is_validated_once_for_every_backend():
    with pytest.raises(arch.ArchError, match="hidden must be a positive integer"):
        ModelConfig(arch.TINY, image_size=32, hidden=0)
    with pytest.raises(TypeError, match="no further positional"):
        ModelConfig.of(ModelConfig(arch.TINY, image_size=32), 10)


def test_a_recorded_config_round_trips_and_an_old_one_loads():
    config = ModelConfig(((1, 8, (3, "lrn")), (1, 16)), image_size=32, batch_norm=False, hidden=HIDDEN)
    assert ModelConfig.from_dict(config.to_dict()) == config
    old = {"arch": [[1, 8], [1, 16]], "num_classes": 10, "in_channels": 1, "image_size": 32, "dropout": 0.5,
           "batch_norm": False}  # written before seed and hidden were recorded
    assert ModelConfig.from_dict(old) == ModelConfig(arch.TINY, image_size=32)
    with pytest.raises(ConfigError, match="unknown field.*colour"):
        ModelConfig.from_dict({**old, "colour": "red"}, "m.pt")
