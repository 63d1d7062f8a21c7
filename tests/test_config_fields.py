"""Every ModelConfig field reaches the model, through torchvision's builders (``vgg11_bn(...)``) and through the
CLI (``vgg train``/``vgg parity`` arguments -> ``arguments.model_config``): a field one of them forgets fails
here, and so does a field the tables below do not name."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import MISSING, fields

import pytest

from common.core import arch
from common.core.config import INITS, Configured, ModelConfig
from common.core.precision import PrecisionError, PrecisionWarning
from common.tools import cli
from common.tools.arguments import model_config

#: a value other than the default for every field, for a model that stays cheap (a narrow head, small images)
NON_DEFAULT = {"arch": arch.VGG11, "num_classes": 7, "in_channels": 3, "image_size": 32, "dropout": 0.25, "seed": 3,
               "batch_norm": True, "hidden": 8, "precision": "bf16", "init": "torchvision"}
#: the CLI's option for every field, None where no sub-command has one (the helper's ``changes`` set those);
#: ``--arch`` names the blocks and batch norm together
OPTIONS = {"arch": "--arch", "num_classes": None, "in_channels": None, "image_size": "--resize", "dropout": "--dropout",
           "seed": "--seed", "batch_norm": "--arch", "hidden": "--hidden", "precision": "--precision",
           "init": "--init"}
#: what the CLI builds: the tiny arch with batch norm, at a size no sub-command has as its default
CLI_VALUES = {**NON_DEFAULT, "arch": arch.TINY, "image_size": 40}
CLI_ARCH = "tiny_bn"


def test_every_field_has_a_non_default_value_and_a_cli_entry():
    for field in fields(ModelConfig):
        assert field.name in NON_DEFAULT, f"ModelConfig.{field.name}: give it a non-default value in NON_DEFAULT"
        assert field.name in OPTIONS, f"ModelConfig.{field.name}: name its CLI option in OPTIONS (None if none)"
        assert field.default is MISSING or NON_DEFAULT[field.name] != field.default, field.name
    assert set(NON_DEFAULT) == set(OPTIONS) == {f.name for f in fields(ModelConfig)}
    assert arch.parse(CLI_ARCH) == (CLI_VALUES["arch"], CLI_VALUES["batch_norm"])


def _assert_builds(build: Callable[[dict], object], values: dict) -> None:
    """``build(values)`` makes a model whose config is ``ModelConfig(**values)``. Where the backend refuses
    the precision on this machine (MXNet runs fp32 only; JAX 0.12's bf16 on a CPU), its refusal names it,
    which shows the field arrived, and the other fields are checked at fp32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)  # a precision this CPU emulates: a note, not a failure
        try:
            model = build(values)
        except PrecisionError as exc:
            assert values["precision"] in str(exc)
            values = {**values, "precision": "fp32"}
            model = build(values)
    assert model.config == ModelConfig(**values)


def test_the_builder_passes_every_field(backend):
    name = next(n for n, made in arch.BUILDERS.items() if made == (NON_DEFAULT["arch"], NON_DEFAULT["batch_norm"]))
    builder = getattr(backend, name)
    _assert_builds(lambda values: builder(**{k: v for k, v in values.items() if k not in ("arch", "batch_norm")}),
                   dict(NON_DEFAULT))


@pytest.mark.parametrize("command", ["train", "parity"])
def test_the_cli_passes_every_field(backend, command):
    def build(values: dict):
        argv = [command, "--arch", CLI_ARCH] + (["--backend", backend.NAME, "--out", "unused"]
                                                 if command == "train" else [])
        for field, option in OPTIONS.items():
            if option and option != "--arch":
                argv += [option, str(values[field])]
        args = cli.parser().parse_args(argv)
        return backend.VGG(model_config(args, **{f: values[f] for f, option in OPTIONS.items() if option is None}))

    _assert_builds(build, dict(CLI_VALUES))


def test_the_models_attributes_are_annotated_for_every_field():
    assert set(Configured.__annotations__) == {"config", *(f.name for f in fields(ModelConfig))}


def _spread(weights: dict, init: str) -> dict[str, tuple[float, float, float]]:
    """Each kernel's (standard deviation, the one ``init`` draws from, the tolerance five standard errors of a
    sample that size give) by canonical name; biases all zero."""
    assert all(not v.any() for k, v in weights.items() if k.endswith(".bias"))
    found = {}
    for name, w in weights.items():
        if not name.endswith(".weight") or w.ndim < 2:
            continue
        fan_in, fan_out = w[0].size, w.shape[0] * w[0, 0].size  # OIHW or (out, in), torchvision's meaning
        if init == "xavier":
            expected = math.sqrt(2.0 / (fan_in + fan_out))  # uniform on +-sqrt(6 / (in + out))
        else:
            expected = math.sqrt(2.0 / fan_out) if w.ndim == 4 else 0.01
        found[name] = (float(w.std()), expected, 5 / math.sqrt(2 * w.size))
    return found


@pytest.mark.parametrize("init", INITS)
def test_init_draws_the_weights_it_names(backend, init):
    model = backend.VGG(arch.small(), image_size=32, hidden=256, init=init)
    for name, (std, expected, tolerance) in _spread(backend.export_weights(model), init).items():
        assert std == pytest.approx(expected, rel=tolerance), f"{backend.NAME} {init}: {name}"
