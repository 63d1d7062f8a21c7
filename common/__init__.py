"""Framework-neutral parts of vgg-frameworks, in layers whose imports run one way (docs/architecture.md):
``core`` (what the network is) -> ``data`` -> ``runtime`` (training, checkpoints, distributed) -> ``serving``
(exports) -> the four ``vgg_*`` backends -> ``tools`` (the CLI and everything that drives the backends).

The flat module names of release 0.1 (``common.arch``, ``common.cli``, ...) still import, with a
DeprecationWarning naming the new place, until the next release."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

#: release 0.1's module -> where it lives now
MOVED = {f"common.{old}": f"common.{new}" for old, new in {
    "arch": "core.arch", "atomic": "core.atomic", "backends": "core.backends", "normalization": "core.normalization",
    "oracle": "core.oracle", "summary": "core.summary", "weights": "core.canonical", "idx": "data.idx",
    "fashion_mnist": "data.fashion_mnist", "batches": "data.batches",
    "training": "runtime.training", "history": "runtime.history", "checkpoint": "runtime.checkpoint",
    "distributed": "runtime.distributed", "inference": "runtime.inference", "serving.export": "serving.export_flow",
    "serving.images": "serving.image_files", "serving.parity": "tools.parity_onnx", "serving.models": "tools.models",
    "serving.predict": "tools.predict", "cli": "tools.cli", "compare": "tools.compare", "launch": "tools.launch",
    "parity": "tools.parity", "parity_distributed": "tools.parity_distributed"}.items()}


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old name as the module now in its place (the same module object), with a warning."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {MOVED[spec.name]}; the old name goes in the next release",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(MOVED[spec.name])
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module) -> None:
        pass


sys.meta_path.append(_Moved())
