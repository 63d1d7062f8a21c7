"""JAX's kernel path: chosen by jaxlib version through XLA_FLAGS before XLA starts, never over the user's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import ROOT, load_backend

load_backend("jax")
from vgg_jax import xla_kernels  # noqa: E402  (after the skip where JAX is missing)

NEW, OLD = (0, 12), (0, 7)


def test_the_measured_path_is_added_to_xla_flags_beside_the_users_other_flags():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    line = xla_kernels.choose(env, NEW, started=False)
    assert line.startswith("ynn-dots: Eigen convolutions, YNNPACK products") and "fastest for jaxlib 0.12" in line
    assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                        *xla_kernels.paths(NEW)["ynn-dots"].flags.split()]
    again = xla_kernels.choose(env, NEW, started=False)  # a worker inherits it: the same path, nothing more
    assert again.startswith("ynn-dots:")
    assert env["XLA_FLAGS"].count("--xla_cpu_experimental_ynn_fusion_type") == 1
    onednn = {xla_kernels.ENV_VAR: "onednn"}
    assert xla_kernels.choose(onednn, NEW, started=False).startswith("onednn: oneDNN convolutions")
    assert onednn["XLA_FLAGS"].split() == xla_kernels.paths(NEW)["onednn"].flags.split()


def test_jaxlib_07_keeps_its_default():
    env: dict[str, str] = {}
    assert xla_kernels.choose(env, OLD, started=False).startswith("jaxlib: Eigen") and "XLA_FLAGS" not in env
    assert list(xla_kernels.paths(OLD)) == ["jaxlib"]


@pytest.mark.parametrize("flags", ["--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
                                   "--xla_cpu_use_onednn=false"])
def test_a_users_choice_in_xla_flags_is_kept(flags):
    env = {"XLA_FLAGS": flags}
    line = xla_kernels.choose(env, NEW, started=False)
    assert env["XLA_FLAGS"] == flags and line == f"XLA_FLAGS as set: {flags}"


def test_vgg_jax_kernels_picks_a_path_and_refuses_an_unknown_one():
    env = {xla_kernels.ENV_VAR: "eigen"}
    assert xla_kernels.choose(env, NEW, started=False).startswith("eigen: Eigen") and env["XLA_FLAGS"] == \
        "--xla_cpu_experimental_ynn_fusion_type="
    env = {xla_kernels.ENV_VAR: "jaxlib"}
    assert xla_kernels.choose(env, NEW, started=False).startswith("jaxlib: YNNPACK") and "XLA_FLAGS" not in env
    with pytest.raises(ValueError, match="VGG_JAX_KERNELS='onednn' is not allowed with jaxlib 0.7: it must be one "
                                         "of jaxlib"):
        xla_kernels.choose({xla_kernels.ENV_VAR: "onednn"}, OLD, started=False)


@pytest.mark.slow
def test_the_chosen_path_is_the_one_xla_compiles_with():
    """In a fresh process: the step's convolutions are the chosen kernels' (XLA's own convolution, not a
    YNNPACK fusion, from jaxlib 0.12 on; oneDNN custom calls where VGG_JAX_KERNELS asks), and vgg_jax.kernels()
    says which."""
    code = ("import re, jax, jax.numpy as jnp, vgg_jax as vgg\n"
            "f = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
            "dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()\n"
            "text = jax.jit(jax.grad(f, argnums=1)).lower(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)))"
            ".compile().as_text()\n"
            "print(vgg.kernels()); print(sorted(set(re.findall(r'custom_call_target=\"([^\"]+)\"', text))))\n"
            "print(text.count(' convolution('), text.count('ynn_fusion'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_kernels.ENV_VAR)}

    def run(**extra: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, **extra}, capture_output=True,
                              text=True, timeout=300, check=True).stdout.splitlines()

    out = run()
    convolutions, fusions = map(int, out[2].split())  # XLA's own convolutions, YNNPACK fusions
    if xla_kernels.version() >= NEW:
        assert out[0].startswith("ynn-dots:") and convolutions >= 1 and fusions == 0
        onednn = run(**{xla_kernels.ENV_VAR: "onednn"})
        assert onednn[0].startswith("onednn:") and "__onednn$convolution" in onednn[1]
    else:
        assert out[0].startswith("jaxlib:") and convolutions >= 1 and "onednn" not in out[1]


def test_flags_set_after_xla_started_are_not_claimed():
    env: dict[str, str] = {}
    assert xla_kernels.choose(env, NEW, started=True) == \
        "jaxlib: XLA started before vgg_jax was imported (ynn-dots not applied)" and "XLA_FLAGS" not in env
