"""What the tests of hostile model files share: the tiny VGG they export and rewrite, and the one-line check
of a refused command (the ``native`` and ``png`` fixtures are in conftest.py, made once per session)."""

from __future__ import annotations

import importlib

from common.core import arch
from common.tools import cli
from helpers import load_backend

#: a VGG with every layer kind but batch norm (LRN, whose torch program pads its channel axis, and a 1x1
#: convolution), and one with batch norm; at the tests' image size
ARCH, SIZE = ((1, 4, (3, "lrn")), (2, 8, (3, 1))), 32
KINDS = {"lrn-1x1": (ARCH, False), "batch-norm": (arch.TINY, True)}


def export_module(name: str):
    """``vgg_<name>.export``, the module (the package's ``export`` is the function)."""
    load_backend(name)
    return importlib.import_module(f"vgg_{name}.export")


def error(capsys, *argv) -> str:
    """The one stderr line of ``vgg argv`` run in this process, which must exit 2 (what was printed before it,
    such as a framework's chatter while a fixture exported, is not the command's)."""
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"vgg {argv[0]}: error: "), err
    return err
