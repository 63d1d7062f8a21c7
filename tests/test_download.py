"""The Fashion-MNIST download against a real HTTP server on loopback that misbehaves as a network might:
too many bytes, bytes after the gzip member, a gzip bomb, a slow drip, and several processes at once."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from common.data import fashion_mnist, idx
from common.data.idx import DataError
from common.tools import cli
from helpers import NO_REAL_DATA, REAL_DATA, ROOT

LABELS = "t10k-labels-idx1-ubyte"  # the smallest file: 5,148 bytes compressed, 10,008 inflated
IMAGES = "train-images-idx3-ubyte"  # the largest: a bomb far smaller than its 26 MB passes the size cap
needs_real_data = pytest.mark.skipif(REAL_DATA is None, reason=NO_REAL_DATA)

#: a child process downloading argv[1] into argv[2] from argv[3]; prints the refusal, if any, and then by how
#: much the download raised the process's peak RSS (KiB)
MEASURED_DOWNLOAD = """
import resource, sys
from pathlib import Path
from common.data import fashion_mnist
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    fashion_mnist.download(sys.argv[1], Path(sys.argv[2]), mirrors=(sys.argv[3],))
except fashion_mnist.DataError as exc:
    print(exc)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


class _Mirror(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (URL path -> bytes), paced as ``server`` says, and counts the requests."""

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if not self.server.endless:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self._send(body)
            while self.server.endless:  # a body that never ends: zeros until the client hangs up
                self.wfile.write(bytes(1 << 16))
        except OSError:
            pass

    def _send(self, body: bytes) -> None:
        """``body`` in pieces of ``server.piece`` bytes, ``server.pace`` seconds apart."""
        for start in range(0, len(body), self.server.piece):
            self.wfile.write(body[start:start + self.server.piece])
            self.wfile.flush()
            time.sleep(self.server.pace)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mirror():
    """Start a loopback mirror serving ``{name: bytes}`` as ``name.gz``; returns its base URL and server."""
    servers = []

    def start(files: dict[str, bytes], *, endless: bool = False, piece: int = 1 << 20,
              pace: float = 0.0) -> tuple[str, http.server.ThreadingHTTPServer]:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
        httpd.files = {f"/{name}.gz": body for name, body in files.items()}
        httpd.endless, httpd.piece, httpd.pace, httpd.requests = endless, piece, pace, []
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/", httpd

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user cache, no $VGG_DATA_DIR, no system copy, and no mirror but the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.setattr(fashion_mnist, "MIRRORS", ("http://127.0.0.1:9/",))


@pytest.fixture
def folder(tmp_path) -> Path:
    """An empty data folder to download into."""
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def real(name: str) -> bytes:
    """The real ``name.gz`` where the tests found it (the official file, or Debian's copy with its shorter header)."""
    return (REAL_DATA / f"{name}.gz").read_bytes()


def gzip_of_zeros(size: int = 1 << 30, block: int = 1 << 24) -> bytes:
    """A valid gzip of ``size`` zero bytes (1 GiB: about 1 MB): one block deflated once and repeated, as
    each block is byte-aligned and self-contained after a full flush, so making it takes under a second."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(block)
    body = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // block):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + body * (size // block) + deflate.flush() + struct.pack("<II", crc, size & 0xFFFFFFFF)


def child_env(tmp_path: Path) -> dict[str, str]:
    """A child's environment: this checkout importable, the test's cache."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}


def leftovers(folder: Path) -> list[str]:
    """What a download left in ``folder``: the verified file or nothing (no temporary file, no lock file)."""
    return sorted(p.name for p in folder.iterdir())


def test_mirrors_are_https_first():
    assert all(url.startswith("https://") for url in fashion_mnist.MIRRORS[:-1])
    assert set(fashion_mnist.SIZES) == set(fashion_mnist.FILES)


@needs_real_data
def test_download_verifies_and_records(tmp_path, folder, mirror):
    url, server = mirror({LABELS: real(LABELS)})
    path = fashion_mnist.download(LABELS, folder, mirrors=(url,))
    assert path == folder / f"{LABELS}.gz" and path.read_bytes() == real(LABELS)
    assert leftovers(folder) == [path.name] and server.requests == [f"/{LABELS}.gz"]
    assert fashion_mnist.read_verified(path, LABELS).shape == (10000,)
    record = json.loads((tmp_path / "cache" / "vgg-frameworks" / "verified.json").read_text())
    assert record[str(path.resolve())]["sha256"] == fashion_mnist.FILES[LABELS][0]


@needs_real_data
def test_a_bad_mirror_is_skipped_for_the_next(folder, mirror):
    bad, _ = mirror({LABELS: gzip.compress(b"not the data")})
    good, _ = mirror({LABELS: real(LABELS)})
    assert fashion_mnist.download(LABELS, folder, mirrors=(bad, good)).read_bytes() == real(LABELS)


@needs_real_data
@pytest.mark.parametrize("endless", [True, False], ids=["endless-stream", "announced-length"])
def test_more_bytes_than_the_known_size_are_cut_off(folder, mirror, endless):
    url, _ = mirror({LABELS: real(LABELS) + bytes(1 << 20)}, endless=endless)
    started = time.monotonic()
    with pytest.raises(DataError, match=r"more than the 5148 bytes of t10k-labels-idx1-ubyte.gz"):
        fashion_mnist.download(LABELS, folder, mirrors=(url,))
    assert time.monotonic() - started < 5 and leftovers(folder) == []


@needs_real_data
@pytest.mark.parametrize("tail", [b"junk", gzip.compress(b"x", mtime=0), bytes(8)],
                         ids=["junk", "second-member", "zeros"])
def test_bytes_after_the_gzip_member_are_refused(folder, mirror, tail):
    body = gzip.compress(idx.read_bytes(REAL_DATA / f"{LABELS}.gz"), mtime=0) + tail
    assert len(body) <= fashion_mnist.SIZES[LABELS][0], "the size cap must not be what refuses it"
    url, _ = mirror({LABELS: body})
    with pytest.raises(DataError, match="bytes follow the end of the gzip stream"):
        fashion_mnist.download(LABELS, folder, mirrors=(url,))
    assert leftovers(folder) == []


@pytest.mark.slow
def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path, folder, mirror):
    bomb = gzip_of_zeros()
    url, _ = mirror({IMAGES: bomb})
    done = subprocess.run([sys.executable, "-c", MEASURED_DOWNLOAD, IMAGES, str(folder), url], cwd=ROOT,
                          env=child_env(tmp_path), capture_output=True, text=True, timeout=60)
    refusal, growth_kib = done.stdout.strip().splitlines()
    assert len(bomb) < 2 << 20 and "inflates to more than the 47040016 bytes expected" in refusal, done.stderr
    assert int(growth_kib) < 16 * 1024, f"peak RSS grew {int(growth_kib) // 1024} MiB: the bomb was inflated in memory"
    assert leftovers(folder) == []


@needs_real_data
def test_a_slow_drip_is_cut_off_by_the_time_limit(folder, mirror):
    url, _ = mirror({LABELS: real(LABELS)}, piece=64, pace=0.1)  # 8 s for the whole file
    started = time.monotonic()
    with pytest.raises(DataError, match=r"took more than 0.5 s \(cut off\)"):
        fashion_mnist.download(LABELS, folder, mirrors=(url,), time_limit=0.5)
    assert time.monotonic() - started < 3 and leftovers(folder) == []


@pytest.mark.slow
@needs_real_data
def test_concurrent_first_downloads_share_one(tmp_path, folder, mirror):
    url, server = mirror({LABELS: real(LABELS)}, piece=512, pace=0.2)  # about 2 s, so the processes overlap
    script = ("import sys\nfrom pathlib import Path\nfrom common.data import fashion_mnist\n"
              "print(fashion_mnist.download(sys.argv[1], Path(sys.argv[2]), mirrors=(sys.argv[3],)))\n")
    workers = [subprocess.Popen([sys.executable, "-c", script, LABELS, str(folder), url], cwd=ROOT,
                                env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    outputs = [worker.communicate(timeout=60) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {str(folder / f"{LABELS}.gz")}
    assert server.requests == [f"/{LABELS}.gz"], "the processes waiting on the lock must not download again"
    assert leftovers(folder) == [f"{LABELS}.gz"]
    assert fashion_mnist.read_verified(folder / f"{LABELS}.gz", LABELS).shape == (10000,)


def test_a_missing_data_dir_is_an_error_not_a_new_folder(tmp_path, monkeypatch):
    typo = tmp_path / "fashoin-mnist"
    with pytest.raises(DataError, match=rf"data_dir '{typo}' does not exist; it must name an existing folder"):
        fashion_mnist.load_split("test", typo)
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(typo))
    with pytest.raises(DataError, match=rf"\$VGG_DATA_DIR '{typo}' does not exist"):
        fashion_mnist.load_split("test")
    assert not typo.exists()


def test_a_missing_data_dir_is_refused_by_the_cli(tmp_path, capsys):
    typo = tmp_path / "fashoin-mnist"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--backend", "torch", "--data-dir", str(typo), "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and error.startswith("vgg train: error: ")
    assert f"--data-dir '{typo}' does not exist" in error and not typo.exists()
