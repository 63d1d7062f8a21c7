"""The trust boundary (issue 34): native exports load only when signed by this user, and every export that
``vgg predict`` opens runs in a confined child. The boundary is tested with files that run code on purpose,
opened with ``--trust-model`` (every check skipped): the code runs, and still cannot write outside its
folder, reach the network, take more memory than its cap or hang the command."""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from common.runtime import confine
from common.serving import formats, signing
from common.tools import cli, models, sandbox
from helpers import ROOT
from hostile import SIZE, error
from processes import run_measured


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_the_python_api_opens_a_model_in_the_boundary_on_request(native):
    path = native("torch")
    opened = sandbox.open_isolated(path)
    images = np.random.default_rng(0).random((3, 1, SIZE, SIZE), dtype=np.float32)
    try:
        assert np.allclose(opened.forward(images), models.open_model(path).forward(images), rtol=1e-5, atol=1e-6)
        assert any("network" in c for c in opened.forward.confinement)
    finally:
        opened.forward.close()


# --- signatures ---------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.backend(name)) for name in ("torch", "jax")])
def test_an_unsigned_export_is_refused_until_the_user_trusts_it(native, png, name, monkeypatch, tmp_path, capsys):
    source = native(name)
    monkeypatch.setenv("VGG_CONFIG_DIR", str(tmp_path / "stranger-config"))  # another user: no key, no signatures
    path = tmp_path / source.name
    (shutil.copytree if source.is_dir() else shutil.copy)(source, path)
    err = error(capsys, "predict", "--model", path, png)
    assert "not written by vgg export here nor trusted" in err and f"vgg trust {path}" in err, err
    assert cli.main(["trust", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"vgg trust: {path} (native) is trusted by this user")
    assert cli.main(["predict", "--model", str(path), str(png)]) == 0
    assert capsys.readouterr().out.startswith(f"{png}: ")


@pytest.mark.backend("torch")
def test_a_signed_file_changed_afterwards_is_unsigned(native, tmp_path, capsys):
    path = tmp_path / "m.pt2"
    shutil.copy(native("torch"), path)
    assert signing.is_signed(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("m/extra/note.txt", "one more entry")
    assert not signing.is_signed(path)


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_the_users_own_config_folder_is_found_without_the_variable(native, png, tmp_path, monkeypatch, capsys):
    """As for a user who never heard of VGG_CONFIG_DIR: the key and signatures under XDG_CONFIG_HOME, while
    the model's process has a HOME of its own."""
    source = native("torch")
    monkeypatch.delenv("VGG_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = tmp_path / "m.pt2"
    shutil.copy(source, path)
    assert cli.main(["trust", str(path)]) == 0 and (tmp_path / "config" / "vgg-frameworks" / "signing.key").is_file()
    assert cli.main(["predict", "--model", str(path), str(png)]) == 0


def test_trust_refuses_data_formats_and_missing_files(tmp_path, capsys):
    assert "is data and loads without trust" in error(capsys, "trust", tmp_path / "m.onnx")
    assert "no such file" in error(capsys, "trust", tmp_path / "m.pt2")


def test_a_folder_with_a_link_cannot_be_signed(tmp_path):
    folder = tmp_path / "m.mxnet"
    folder.mkdir()
    (folder / "link").symlink_to("/etc/passwd")
    with pytest.raises(formats.ModelFileError, match="link or special file"):
        signing.sign(folder)
    assert not signing.is_signed(folder)


# --- the boundary, with files that run code on purpose --------------------------------------------------

class Code:
    """Unpickled, runs ``source`` (a .pt2's example inputs are a pickle; --trust-model lets torch read it)."""

    def __init__(self, source: str):
        self.source = source

    def __reduce__(self):
        return exec, (self.source,)


def code_pt2(source: Path, target: Path, code: str) -> Path:
    """A copy of the real export ``source`` whose example inputs run ``code`` when torch loads it."""
    import torch
    buffer = io.BytesIO()
    torch.save(((Code(code),), {}), buffer)
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    inputs = next(name for name in entries if name.endswith("data/sample_inputs/model.pt"))
    entries[inputs] = buffer.getvalue()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return target


def _confinement_works(kind: str) -> str | None:
    """Why ``kind`` of confinement is not available here (None if it is), tried in a fresh process."""
    probe = {"network": "print(confine.own_network() or '')",
             "landlock": "import tempfile; print('' if confine.landlock(tempfile.mkdtemp()) else 'no Landlock')"}
    out = subprocess.run([sys.executable, "-c", f"from common.runtime import confine; {probe[kind]}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60).stdout.strip()
    return out or None


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_trusted_code_runs_but_cannot_write_outside_its_folder(native, png, tmp_path, capsys):
    if why := _confinement_works("landlock"):
        pytest.skip(f"this kernel cannot confine writes: {why}")
    marker = tmp_path / "marker"
    path = code_pt2(native("torch"), tmp_path / "w.pt2", f"open({str(marker)!r}, 'w').write('#!/bin/sh')")
    err = error(capsys, "predict", "--model", path, png, "--trust-model")
    assert str(path) in err and "Permission denied" in err, err
    assert not marker.exists()
    with contextlib.suppress(formats.ModelFileError):  # the same file outside the boundary: the code is real
        models.open_model(path, trust_model=True)
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_trusted_code_cannot_reach_the_network(native, png, tmp_path, capsys):
    if why := _confinement_works("network"):
        pytest.skip(f"no network namespace here: {why}")
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        port = server.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), 5).sendall(b'stolen')"
        path = code_pt2(native("torch"), tmp_path / "n.pt2", code)
        err = error(capsys, "predict", "--model", path, png, "--trust-model")
        assert str(path) in err and ("unreachable" in err or "Permission denied" in err), err
        with pytest.raises(socket.timeout):
            server.accept()


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_trusted_code_that_allocates_past_the_cap_is_error(native, png, tmp_path):
    path = code_pt2(native("torch"), tmp_path / "m.pt2", "x = bytearray(40 << 30)")
    status, _, err, peak = run_measured(["predict", "--model", path, png, "--trust-model", "--max-memory", "4"])
    ours = [line for line in err.splitlines() if line.startswith("vgg ")]
    assert status == 2 and len(ours) == 1 and "Traceback" not in err, err[-2000:]
    assert str(path) in ours[0] and "memory" in ours[0], ours
    assert peak < 2e9, peak


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_a_model_process_killed_by_a_signal_is_error(native, png, tmp_path, capsys):
    path = code_pt2(native("torch"), tmp_path / "k.pt2", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    err = error(capsys, "predict", "--model", path, png, "--trust-model")
    assert str(path) in err and "SIGSEGV" in err, err


@pytest.mark.once
@pytest.mark.slow
@pytest.mark.backend("torch")
def test_a_model_that_hangs_is_stopped_at_the_time_limit(native, png, tmp_path, capsys):
    path = code_pt2(native("torch"), tmp_path / "h.pt2", "import time; time.sleep(600)")
    err = error(capsys, "predict", "--model", path, png, "--trust-model", "--time-limit", "3")
    assert str(path) in err and "no answer within 3 s" in err, err


def test_limits_are_checked_when_the_command_line_is_read(png, capsys):
    for flag in ("--max-memory", "--time-limit"):
        with pytest.raises(SystemExit) as exit:
            cli.main(["predict", "--model", "m.onnx", str(png), flag, "0"])
        err = capsys.readouterr().err.strip()
        assert exit.value.code == 2 and len(err.splitlines()) == 1 and f"{flag} 0 is not allowed" in err, err


def test_this_machine_reports_what_it_confines():
    assert set(confine.available()) == {"memory cap", "network namespace", "landlock"}
