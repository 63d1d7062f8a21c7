"""The precision axis (common/core/precision.py): each backend's own mixed-precision mechanism really runs
(activations in the format inside the network, master weights float32), agrees with the rounding oracle
and with the reference backend, scales fp16's loss, and a precision a backend or machine cannot run is
refused in one line with nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from common.core import arch, canonical, layouts, oracle, precision, tolerances
from common.core.backends import BACKENDS
from common.core.config import ModelConfig
from common.core.precision import PrecisionError, PrecisionWarning
from common.runtime import capability
from common.runtime.training import Recipe
from common.tools import parity
from helpers import ACTIVE, ROOT, with_reference
from tiny_data import HIDDEN

MIXED = ("bf16", "fp16")


def _runs_mixed(backend) -> None:
    if BACKENDS[backend.NAME].cpu_mixed == "none":
        pytest.skip(f"{backend.NAME} runs fp32 only (its refusal is tested below)")


def _build(backend, name: str):
    _runs_mixed(backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)  # this CPU may run the format slowly: said elsewhere
        try:
            return backend.VGG(arch.TINY, image_size=32, hidden=HIDDEN, dropout=0.0, precision=name)
        except PrecisionError as exc:  # JAX 0.8+'s YNNPACK fusions: test_jax_bf16_with_ynn_fusions_off
            pytest.skip(str(exc))


def _first_block_dtype(backend, model, x: np.ndarray) -> str:
    """The dtype of the first block's output for ``x``, as the framework computed it inside the network."""
    if backend.NAME == "torch":
        import torch

        from vgg_torch.model import computing
        with torch.no_grad(), computing(model):
            return str(model[0](torch.from_numpy(x)).dtype).removeprefix("torch.")
    out = model.layers[0](x)
    return out.dtype.name if backend.NAME == "tf" else str(out.dtype)


@pytest.mark.parametrize("name", MIXED)
def test_the_format_really_runs_inside_the_network(backend, name):
    """A setting that silently does nothing fails here: the convolutions' output is in the format, the
    weights stay float32, and the logits come back float32."""
    model = _build(backend, name)
    x = layouts.images_from_nchw(tolerances.fixed_batch(arch.TINY, 32, 2)[0], backend.LAYOUT)
    assert _first_block_dtype(backend, model, x) == precision.get(name).compute
    assert backend.predict(model, x).dtype == np.float32
    assert all(v.dtype == np.float32 for k, v in backend.export_weights(model).items() if "num_batches" not in k)
    fp32 = _build(backend, "fp32")
    assert _first_block_dtype(backend, fp32, x) == "float32"  # and a float32 model beside it is untouched


def test_bf16_agrees_with_the_rounding_oracle_and_the_reference(backend, reference):
    from common.tools import parity
    _build(backend, "bf16")  # skips where the backend refuses bf16 on this machine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        config = ModelConfig(arch.small(), image_size=32, hidden=HIDDEN, precision="bf16")
        matrices = parity.run(with_reference(backend, reference), config, batch=4, steps=2)
    assert parity.passed(matrices, "bf16"), {q: max(c.values()) for q, c in matrices.items()}
    assert any(parity.ORACLE in pair for pair in matrices["logits"])


def test_the_rounding_oracle_rounds_to_nearest_even():
    x = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9, -2.0 ** -100, np.inf])
    assert precision.round_to(x, "bf16").tolist() == [1.0, 1.0, 1 + 2 ** -6, 1.0, -2.0 ** -100, np.inf]
    assert precision.round_to(np.array([1 + 2 ** -11]), "fp16").tolist() == [1.0]
    weights = canonical.random_weights(arch.TINY, image_size=32, hidden=HIDDEN)
    images = tolerances.fixed_batch(arch.TINY, 32, 2)[0]
    exact, low = (oracle.forward(dict(weights), arch.TINY, images, precision=p) for p in ("fp32", "bf16"))
    assert 0 < tolerances.relative(low, exact) <= precision.bounds("bf16")["logits"]


@pytest.mark.parametrize("name", MIXED)
def test_a_step_in_the_format_trains_and_checkpoints_its_loss_scale(backend, name):
    model = _build(backend, name)
    engine = backend.Engine(model, Recipe(batch_size=4, momentum=0.9))
    engine.reseed(0)
    images, labels = tolerances.fixed_batch(arch.TINY, 32, 4)
    loss, _ = engine.step(*backend.to_tensor(layouts.images_from_nchw(images, backend.LAYOUT), labels), 0.01)
    assert np.isfinite(loss)
    state = engine.state()
    scaled = precision.get(name).loss_scaling
    assert (precision.LOSS_SCALE_KEYS[0] in state) == scaled
    if scaled:
        assert float(state[precision.LOSS_SCALE_KEYS[0]]) == precision.LOSS_SCALING.initial
        again = backend.Engine(_build(backend, name), Recipe(batch_size=4, momentum=0.9))
        again.load_state({**state, precision.LOSS_SCALE_KEYS[0]: np.asarray(1024.0),
                          precision.LOSS_SCALE_KEYS[1]: np.asarray(7)})
        restored = again.state()
        assert float(restored[precision.LOSS_SCALE_KEYS[0]]) == 1024.0
        assert int(restored[precision.LOSS_SCALE_KEYS[1]]) == 7


def test_an_fp16_step_that_overflows_is_skipped_and_shrinks_the_scale(backend):
    model = _build(backend, "fp16")
    engine = backend.Engine(model, Recipe(batch_size=4, momentum=0.9))
    engine.reseed(0)
    huge = {precision.LOSS_SCALE_KEYS[0]: np.asarray(3e38), precision.LOSS_SCALE_KEYS[1]: np.asarray(5)}
    engine.load_state({**engine.state(), **huge})
    before = backend.export_weights(model)
    images, labels = tolerances.fixed_batch(arch.TINY, 32, 4)
    engine.step(*backend.to_tensor(layouts.images_from_nchw(images, backend.LAYOUT), labels), 0.01)
    after = backend.export_weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # skipped
    state = engine.state()
    assert float(state[precision.LOSS_SCALE_KEYS[0]]) == pytest.approx(3e38 * precision.LOSS_SCALING.backoff)
    assert int(state[precision.LOSS_SCALE_KEYS[1]]) == 0


def test_an_export_of_a_mixed_model_is_float32(backend, tmp_path):
    from common.serving import export_flow
    model = _build(backend, "bf16")
    master = export_flow.float32_master(model, backend.VGG, backend.export_weights, backend.import_weights)
    assert master.config.precision == "fp32" and master.config.arch == model.config.arch
    x = layouts.images_from_nchw(tolerances.fixed_batch(arch.TINY, 32, 2)[0], backend.LAYOUT)
    assert tolerances.relative(backend.predict(master, x), backend.predict(model, x)) <= 4 * 2 ** -8


def test_what_a_machine_or_backend_cannot_run_is_refused_or_said():
    with pytest.raises(PrecisionError, match="TensorFloat-32 and means nothing on a CPU"):
        capability.check("torch", "tf32")  # cpu-neutral: tf32 is refused on every CPU
    with pytest.raises(PrecisionError, match="mxnet runs fp32 only"):
        capability.check("mxnet", "bf16")  # cpu-neutral: MXNet runs fp32 only, on every CPU
    assert "emulated" in capability.check("torch", "bf16", flags={"avx2", "fma"})
    assert capability.check("torch", "bf16", flags={"avx512f", "avx512_bf16"}) is None
    assert "no speed-up" in capability.check("jax", "bf16")  # cpu-neutral: XLA upcasts on every CPU
    assert "fp16 is for GPUs" in capability.check("tf", "fp16", flags={"avx512_bf16"})
    with pytest.raises(PrecisionError, match="precision 'int8' is not one of fp32, bf16, fp16, tf32"):
        precision.get("int8")


@pytest.mark.slow
@pytest.mark.parametrize("argv, message", [
    (["--backend", "torch", "--precision", "tf32"], "means nothing on a CPU: use fp32 here"),
    (["--backend", "mxnet", "--precision", "bf16"], "mxnet runs fp32 only"),
    (["--backend", "torch", "--device", "gpu"], "--device gpu but no GPU is visible"),
])
def test_train_refuses_in_one_line_and_writes_nothing(argv, message, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "common.tools.cli", "train", *argv, "--arch", "tiny",
                           "--resize", "32", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vgg train")]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-1500:]
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["parity", "--backends", "torch,jax", "--device", "gpu"],
    ["compare", "--backends", "torch", "--device", "gpu"],
    ["race", "--backends", "torch", "--device", "gpu"],
])
def test_a_gpu_request_without_a_gpu_is_one_line_and_writes_nothing(argv, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = ["--out", str(tmp_path / "report")] if argv[0] in ("compare", "race") else []
    proc = subprocess.run([sys.executable, "-m", "common.tools.cli", *argv, "--arch", "tiny", "--resize", "32", *out],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"vgg {argv[0]}")]
    assert proc.returncode == 2 and len(lines) == 1 and "no GPU is visible" in lines[0], proc.stderr[-1500:]
    assert not (tmp_path / "report").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "export"])
def test_predict_and_export_on_a_missing_gpu_are_one_line_and_write_nothing(command, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from PIL import Image
    model = tmp_path / "w.safetensors"
    canonical.save_file(canonical.random_weights(arch.TINY, image_size=32, hidden=HIDDEN), model)
    Image.new("L", (28, 28)).save(tmp_path / "shirt.png")
    out = tmp_path / "w.pt2"
    extra = [str(tmp_path / "shirt.png")] if command == "predict" else ["--out", str(out)]
    proc = subprocess.run([sys.executable, "-m", "common.tools.cli", command, "--model", str(model), "--backend",
                           "torch", "--arch", "tiny", "--resize", "32", "--device", "gpu", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"vgg {command}")]
    assert proc.returncode == 2 and len(lines) == 1 and "no GPU is visible" in lines[0], proc.stderr[-1500:]
    assert not out.exists()


def test_parity_command_in_bf16_prints_an_all_pass_matrix(capsys, tmp_path):
    from common.tools import cli
    names = [n for n in ACTIVE if BACKENDS[n].cpu_mixed != "none" and not _refuses_bf16(n)]
    if len(names) < 2:
        pytest.skip("vgg parity compares two or more backends that run bf16")
    status = cli.main(["parity", "--precision", "bf16", "--arch", "tiny", "--resize", "32", "--hidden", str(HIDDEN),
                       "--batch", "4", "--steps", "2", "--backends", ",".join(names), "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.out
    assert "in bf16" in captured.out and "vgg parity: all pass" in captured.out
    assert f"tolerance {precision.bounds('bf16')['logits']:g}" in captured.out


def test_parity_in_bf16_with_batch_norm_holds_training_mode_to_the_derived_bound(capsys, tmp_path):
    """In training mode each batch norm divides its input by the batch's spread, which grows the rounding of
    its input by sqrt(1 + (mean/std)^2) (tolerances.batch_norm_bounds): the parity holds train-mode logits and
    gradients to that bound, computed from the oracle's batch statistics, and every backend passes it."""
    from common.tools import cli
    names = [n for n in ACTIVE if BACKENDS[n].cpu_mixed != "none" and not _refuses_bf16(n)]
    if len(names) < 2:
        pytest.skip("vgg parity compares two or more backends that run bf16")
    config = ModelConfig(arch.TINY, image_size=32, hidden=HIDDEN, batch_norm=True, precision="bf16")
    bounds = parity.bounds_of(config, 4)
    assert bounds["train logits"] > precision.bounds("bf16")["train logits"]
    assert parity.bounds_of(ModelConfig(arch.small(), image_size=32, hidden=HIDDEN, precision="bf16"), 4) == \
        precision.bounds("bf16")  # no batch norm: the format's own bounds
    cli.main(["parity", "--precision", "bf16", "--arch", "tiny_bn", "--resize", "32", "--hidden", str(HIDDEN),
              "--batch", "4", "--steps", "1", "--backends", ",".join(names), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    sections = {part.splitlines()[0].split(" (")[0]: part for part in out.split("\n\n") if " (max relative" in part
                or " (relative L2" in part}
    for quantity in ("train logits", "train gradients"):  # the quantities the derived bound covers
        assert f"tolerance {bounds[quantity]:g})" in sections[quantity] and "FAIL" not in sections[quantity], out


def test_the_batch_norm_bound_follows_the_oracles_own_rounding():
    """The bound's recursion against what it models: the bf16 rounding oracle's train-mode logits against
    float64's, one rounding per convolution output, on three weight draws (estimates of the error's size,
    so within the bound's largest pairwise allowance, four roundings)."""
    from common.core.normalization import TORCH_BN
    for seed in range(3):
        config = ModelConfig(arch.small(), image_size=32, hidden=HIDDEN, batch_norm=True, seed=seed)
        weights = canonical.random_weights(config)
        images, _ = tolerances.fixed_batch(config.arch, 32, 8, seed=seed)
        after = dict(weights)
        exact = oracle.forward(after, config.arch, images, batch_norm=True, training=True)
        rounded = oracle.forward(dict(weights), config.arch, images, batch_norm=True, training=True,
                                 precision="bf16")
        spreads = tolerances.batch_spreads(weights, after, TORCH_BN.momentum)
        pooled = arch.last_of_block(config.arch)  # a block's last norm feeds its pool
        one = tolerances.batch_norm_bounds(2.0 ** -8, spreads, pooled, roundings=1)["train logits"]
        four = tolerances.batch_norm_bounds(2.0 ** -8, spreads, pooled)["train logits"]
        assert one / 2 < tolerances.relative(rounded, exact) <= four, seed


def _refuses_bf16(name: str) -> bool:
    try:
        capability.check(name, "bf16")  # cpu-neutral: picks which backends the test runs, on any CPU
        if name == "jax":
            from vgg_jax.framework import check_bf16
            check_bf16()  # cpu-neutral: as above
    except PrecisionError:
        return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["jaxlib", "ynn-dots", "onednn", "eigen"])
def test_jax_bf16_with_ynn_fusions_off(kernels):
    """JAX 0.8+ refuses bf16 on a CPU while XLA's YNNPACK convolutions are on (they give NaN logits with jaxlib
    0.12: jaxlib's own default kernels); with them off (this project's default, YNNPACK for the products
    only, or oneDNN's or Eigen's convolutions), its bf16 logits are the rounding oracle's."""
    jax = pytest.importorskip("jax")
    if tuple(int(p) for p in jax.__version__.split(".")[:2]) < (0, 12):
        pytest.skip(f"jax {jax.__version__} has no YNNPACK fusions (nor their flag)")
    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "import vgg_jax as vgg\n"
            "from common.core import arch, canonical, layouts, oracle, precision, tolerances\n"
            "w = canonical.random_weights(arch.small(), image_size=32, hidden=64)\n"
            "x = tolerances.fixed_batch(arch.small(), 32, 4)[0]\n"
            "m = vgg.VGG(arch.small(), image_size=32, hidden=64, dropout=0.0, precision='bf16')\n"
            "vgg.import_weights(m, w)\n"
            "got = vgg.predict(m, layouts.images_from_nchw(x, vgg.LAYOUT))\n"
            "print(tolerances.relative(got, oracle.forward(dict(w), arch.small(), x, precision='bf16')))\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, "VGG_JAX_KERNELS": kernels})
    if kernels == "jaxlib":
        assert proc.returncode != 0 and "YNNPACK" in proc.stderr and "VGG_JAX_KERNELS=ynn-dots" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) <= precision.bounds("bf16")["logits"]
