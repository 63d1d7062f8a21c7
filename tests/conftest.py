"""Backend parametrisation: a missing framework skips locally, fails under VGG_REQUIRE_ALL_BACKENDS=1.

VGG_EXPECT_ABSENT=mxnet (set by `.ci/test` in the `modern` environment, which cannot hold MXNet) names backends
whose absence is expected: when not installed, their tests are not collected and the run says so once, at its end.
"""

from __future__ import annotations

import os
import platform

import pytest

from common import backends

REQUIRE_ALL = os.environ.get("VGG_REQUIRE_ALL_BACKENDS") == "1"
EXPECT_ABSENT = [name for name in os.environ.get("VGG_EXPECT_ABSENT", "").split(",") if name]
for _name in EXPECT_ABSENT:
    if _name not in backends.NAMES:
        raise pytest.UsageError(f"VGG_EXPECT_ABSENT={_name!r}: not a backend; choose from {','.join(backends.NAMES)}")
ABSENT = tuple(name for name in EXPECT_ABSENT if backends.framework_version(name) is None)
#: the backends this environment tests
ACTIVE = tuple(name for name in backends.NAMES if name not in ABSENT)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "backend(name): the test needs this backend (e.g. a case only it has)")


def pytest_collection_modifyitems(config, items) -> None:
    """Cases marked for an expectedly absent backend are deselected, like its parametrised tests."""
    gone = [item for item in items if any(m.args[0] in ABSENT for m in item.iter_markers("backend"))]
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = [item for item in items if item not in gone]


def pytest_runtest_setup(item) -> None:
    """A test marked for a backend skips (or, under VGG_REQUIRE_ALL_BACKENDS=1, fails) when it is missing."""
    for mark in item.iter_markers("backend"):
        load_backend(mark.args[0])


def pytest_report_header(config) -> list[str]:
    found = ", ".join(f"{name} {backends.framework_version(name) or 'not installed'}" for name in ACTIVE)
    return [f"backends: {found}; numpy {backends.distribution_version('numpy')}, Python {platform.python_version()}"]


def pytest_terminal_summary(terminalreporter) -> None:
    if ABSENT:  # at the end, where -q shows it too
        terminalreporter.write_line(f"not in this environment, as VGG_EXPECT_ABSENT says: {', '.join(ABSENT)} "
                                    "(its tests were not collected)")


def load_backend(name: str):
    try:
        return backends.load(name)
    except backends.BackendError as exc:
        if REQUIRE_ALL:
            pytest.fail(f"VGG_REQUIRE_ALL_BACKENDS=1 but {exc}")
        pytest.skip(str(exc))


@pytest.fixture(params=ACTIVE)
def backend(request):
    """Each backend module in turn (vgg_torch, vgg_tf, vgg_jax, vgg_mxnet)."""
    return load_backend(request.param)


@pytest.fixture
def all_backends():
    """Every backend module this environment tests, as a dict name -> module."""
    return {name: load_backend(name) for name in ACTIVE}
