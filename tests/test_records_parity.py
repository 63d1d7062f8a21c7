"""Records of parity and of environments: ``vgg parity`` writes a record holding what it printed, and
``vgg results environment`` one holding this interpreter's package versions."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata

import pytest

from common.core import backends, tolerances
from common.tools import cli, parity, parity_record, records
from helpers import ACTIVE, ROOT, load_backend
from tiny_data import HIDDEN


def _matrices(record: records.Record) -> dict[str, dict[tuple[str, str], float]]:
    """The record's differences as vgg parity's matrices: check -> (a, b) -> difference, both orders."""
    found: dict[str, dict[tuple[str, str], float]] = {}
    for r in record.results(parity_record.METRIC):
        a, b = r["labels"]["pair"].split("-")
        cells = found.setdefault(r["labels"]["check"].replace("_", " "), {})
        cells[a, b] = cells[b, a] = r["value"]
    return found


def test_parity_writes_a_record_of_what_it_printed(tmp_path, capsys):
    """Two backends, the tiny arch, two steps: the record in --out is valid and every matrix it holds prints
    as vgg parity printed it."""
    if len(ACTIVE) < 2:
        pytest.skip("vgg parity compares two or more backends")
    names = ACTIVE[:2]
    for name in names:
        load_backend(name)
    argv = ["parity", "--backends", ",".join(names), "--arch", "tiny", "--resize", "32", "--hidden", str(HIDDEN),
            "--batch", "4", "--steps", "2", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    (record,) = records.find([tmp_path])
    assert records.validate(record.data) == [] and record.data["kind"] == "parity"
    assert record.data["command"] == "vgg " + " ".join(argv) and record.data["details"]["passed"] is True
    assert f"vgg parity: wrote {record.path}" in out
    matrices = _matrices(record)
    assert set(matrices) == {"logits", "gradients", "trajectory"}
    assert {r["labels"]["pair"] for r in record.results(check="logits", metric="max_rel_diff")} == \
        {f"numpy-{names[0]}", f"numpy-{names[1]}", "-".join(names)}
    for quantity, cells in matrices.items():
        assert parity.format_matrix(cells, quantity) in out
        assert record.value("tolerance", check=quantity) == tolerances.TOLERANCES[quantity]
    assert all({k: v for k, v in r["labels"].items() if k not in ("pair", "check")} ==
               {"precision": "fp32", "size": 32, "arch": "tiny"} for r in record.results())


@pytest.mark.slow
def test_environment_verb_records_the_installed_versions(tmp_path):
    """The record's versions are importlib.metadata's (Python's is platform's), one per installed package."""
    proc = subprocess.run([sys.executable, "-m", "common.tools.cli", "results", "environment", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = records.find([tmp_path])
    assert records.validate(record.data) == [] and record.data["kind"] == "environment"
    versions = {r["labels"]["package"]: r["value"] for r in record.results("version")}
    assert versions.pop("python") == platform.python_version()
    expected = {}
    for package in (*records.PACKAGES, *(d for b in backends.BACKENDS.values() for d in b.distributions)):
        try:
            expected[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    assert versions == expected and "numpy" in versions
    assert all(r["unit"] == "" for r in record.results("version"))
