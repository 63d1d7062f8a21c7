"""Backend parametrisation: a missing framework skips locally, fails under VGG_REQUIRE_ALL_BACKENDS=1, and a
backend VGG_EXPECT_ABSENT names is not collected (tests/helpers.py). A test that starts a Python process is
marked ``slow`` (``.ci/quick`` runs the others), and one that does so unmarked fails. A test marked ``once``
checks the project's own logic with nothing a framework version changes; ``.ci/test`` runs it in its first
environment only (VGG_ONCE_DONE=1 in the second)."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

import pytest

from common.core import backends
from helpers import ABSENT, ACTIVE, REFERENCE, load_backend

#: the id of the test running now while it is not marked slow (empty otherwise)
_quick: list[str] = []


def _no_python_process_in_a_quick_test(event: str, args: tuple) -> None:
    """An audit hook: a test not marked slow that starts a Python process (``vgg``, a script, workers, a
    model's confined process, a fresh interpreter) fails, so that ``-m "not slow"`` stays in one process."""
    if event == "subprocess.Popen" and _quick and Path(os.fsdecode(args[0])).name.startswith("python"):
        pytest.fail(f"{_quick[0]} starts a Python process ({os.fsdecode(args[0])}): mark it "
                    "@pytest.mark.slow", pytrace=False)


def pytest_configure(config) -> None:
    # the suite's own signing key and signatures (vgg export signs, native exports load only when signed),
    # never the user's; children inherit it
    os.environ.setdefault("VGG_CONFIG_DIR", tempfile.mkdtemp(prefix="vgg-test-config-"))
    config.addinivalue_line("markers", "backend(name): the test needs this backend (e.g. a case only it has)")
    config.addinivalue_line("markers", "gpu: the GPU path; skips without a GPU (benchmarks/gpu_check.sh runs them)")
    config.addinivalue_line("markers", "slow: starts a Python process (vgg, a script, workers, a model's confined "
                                       "process); .ci/quick leaves these out, .ci/test runs them")
    config.addinivalue_line("markers", "once: the project's own logic (launcher, records), the same under every "
                                       "framework version; deselected where VGG_ONCE_DONE=1 (.ci/test's second "
                                       "environment)")
    sys.addaudithook(_no_python_process_in_a_quick_test)


def pytest_collection_modifyitems(config, items) -> None:
    """Cases marked for an expectedly absent backend are deselected, like its parametrised tests, and those
    marked ``once`` where another environment of this run has run them."""
    done = os.environ.get("VGG_ONCE_DONE") == "1"
    gone = [item for item in items if any(m.args[0] in ABSENT for m in item.iter_markers("backend"))
            or (done and item.get_closest_marker("once"))]
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = [item for item in items if item not in gone]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Setup, call and teardown of a test not marked slow start no Python process (the audit hook above)."""
    _quick[:] = [] if item.get_closest_marker("slow") else [item.nodeid]
    yield
    _quick.clear()


def pytest_runtest_setup(item) -> None:
    """A test marked for a backend skips (or, under VGG_REQUIRE_ALL_BACKENDS=1, fails) when it is missing."""
    for mark in item.iter_markers("backend"):
        load_backend(mark.args[0])


def pytest_report_header(config) -> list[str]:
    found = ", ".join(f"{name} {backends.framework_version(name) or 'not installed'}" for name in ACTIVE)
    return [f"backends: {found}; numpy {backends.distribution_version('numpy')}, Python {platform.python_version()}"]


def pytest_terminal_summary(terminalreporter) -> None:
    if os.environ.get("VGG_ONCE_DONE") == "1":
        terminalreporter.write_line("tests marked once ran in the first environment (VGG_ONCE_DONE=1)")
    if ABSENT:  # at the end, where -q shows it too
        terminalreporter.write_line(f"not in this environment, as VGG_EXPECT_ABSENT says: {', '.join(ABSENT)} "
                                    "(its tests were not collected)")


@pytest.fixture(params=ACTIVE)
def backend(request):
    """Each backend module in turn (vgg_torch, vgg_tf, vgg_jax, vgg_mxnet)."""
    return load_backend(request.param)


@pytest.fixture
def all_backends():
    """Every backend module this environment tests, as a dict name -> module."""
    return {name: load_backend(name) for name in ACTIVE}


@pytest.fixture
def reference():
    """The backend the others are compared with where the oracle computes nothing (gradients, SGD steps)."""
    return load_backend(REFERENCE)


@pytest.fixture(scope="session")
def native(tmp_path_factory):
    """``native(backend, kind="lrn-1x1")``: a native export of the hostile-file tests' VGG (tests/hostile.py),
    made once for the session and signed, as vgg export signs, in the suite's config folder."""
    from common.serving import formats
    from hostile import KINDS, SIZE
    from tiny_data import HIDDEN
    folder, made = tmp_path_factory.mktemp("native"), {}

    def get(name: str, kind: str = "lrn-1x1") -> Path:
        if (name, kind) not in made:
            vgg = load_backend(name)
            blocks, batch_norm = KINDS[kind]
            model = vgg.VGG(blocks, image_size=SIZE, hidden=HIDDEN, batch_norm=batch_norm)
            made[name, kind] = vgg.export(model, folder / f"{kind}{formats.NATIVE[name]}").path
        return made[name, kind]
    return get


@pytest.fixture(scope="session")
def png(tmp_path_factory) -> Path:
    """One 28x28 grayscale PNG."""
    import numpy as np
    from PIL import Image
    path = tmp_path_factory.mktemp("images") / "a.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
    return path

