"""The architecture holds: imports run one way through the layers (docs/architecture.md), and importing a
backend loads none of the tools that drive it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ACTIVE, ROOT, load_backend

#: bottom to top; a module may import its own layer and those below it, never one above
LAYERS = ("common.core", "common.data", "common.runtime", "common.serving", "backends", "common.tools")
BACKEND_PACKAGES = ("vgg_torch", "vgg_tf", "vgg_jax", "vgg_mxnet")


def layer_of(module: str) -> str | None:
    """The layer a project module belongs to; None for third-party modules (and ``common`` itself)."""
    if module.split(".")[0] in BACKEND_PACKAGES:
        return "backends"
    return next((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), None)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in ("common", *BACKEND_PACKAGES):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in the file, at any depth (function-level imports too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this package
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def wrong_way(modules: dict[str, Path]) -> list[str]:
    """Every import that points up the layers, or from one backend into another."""
    bad = []
    for module, path in modules.items():
        here = layer_of(module)
        if here is None:
            continue
        for line, target in imports_of(module, path):
            there = layer_of(target)
            if there is None:
                continue
            other_backend = here == there == "backends" and target.split(".")[0] != module.split(".")[0]
            if LAYERS.index(there) > LAYERS.index(here) or other_backend:
                bad.append(f"{module} line {line}: {here} imports {target} ({there})")
    return bad


def test_imports_run_one_way():
    assert wrong_way(project_modules()) == []


def test_the_check_sees_a_wrong_arrow(tmp_path):
    """The walk itself is tested: a core module importing a tool, and a backend importing another, fail."""
    core = tmp_path / "core.py"
    core.write_text("def f():\n    from common.tools import cli\n")
    backend = tmp_path / "model.py"
    backend.write_text("from vgg_tf.framework import tf\n")
    bad = wrong_way({"common.core.bad": core, "vgg_torch.bad": backend})
    assert len(bad) == 2 and "common.tools.cli" in bad[0] and "vgg_tf.framework" in bad[1]


def test_every_module_is_in_a_layer():
    outside = [m for m in project_modules() if layer_of(m) is None and m != "common"]
    assert outside == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ACTIVE)
def test_a_backend_loads_no_tool(name):
    load_backend(name)  # skips (or fails under VGG_REQUIRE_ALL_BACKENDS=1) when not installed
    code = (f"import sys, json, vgg_{name}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('common.tools'))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_release_0_1_module_names_still_import_with_a_warning():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import common.arch\nexcept DeprecationWarning as w:\n    print(w)\n"
            "warnings.simplefilter('ignore', DeprecationWarning)\n"
            "import common.arch, common.cli, common.core.arch, common.tools.cli\n"
            "from common import data\n"
            "assert common.arch is common.core.arch and common.cli is common.tools.cli and data.load\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "common.arch moved to common.core.arch" in proc.stdout
