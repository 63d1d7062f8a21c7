"""The shared Fashion-MNIST loader: IDX files, verification, download, batching and each backend's tensors."""

from __future__ import annotations

import functools
import gzip
import http.server
import threading

import numpy as np
import pytest

from common.core import layouts
from common.data import batches, fashion_mnist, idx, loader
from common.data.augment import Augmentation
from common.data.idx import DataError
from helpers import NO_REAL_DATA, REAL_DATA
from tiny_data import fake_files

NAMES = list(fashion_mnist.FILES)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user cache, no $VGG_DATA_DIR, no system copy, and mirrors that refuse connections."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.setattr(fashion_mnist, "MIRRORS", ("http://127.0.0.1:9/", "http://127.0.0.1:9/mirror/"))


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = idx.write(tmp_path / ("a.gz" if compress else "a"), array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    np.testing.assert_array_equal(idx.read(path, ndim=3, count=2), array)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: b"\x08\x03" + raw[2:], "bad magic number"),
    (lambda raw: raw[:-7], "truncated"),
    (lambda raw: raw[:10], "truncated"),
    (lambda raw: raw + b"\0", "longer than its header"),
    (lambda raw: raw[:3] + b"\x02" + raw[4:], "has 2 dimensions, expected 3"),
    (lambda raw: b"", "bad magic number empty"),
])
def test_idx_rejects_damaged_files(tmp_path, damage, message):
    raw = idx.encode(np.zeros((4, 28, 28), np.uint8))
    path = tmp_path / "bad"
    path.write_bytes(damage(raw))
    with pytest.raises(DataError, match=message):
        idx.read(path, ndim=3)


def test_idx_wrong_count_and_broken_gzip(tmp_path):
    path = idx.write(tmp_path / "x.gz", np.zeros((5, 28, 28), np.uint8))
    with pytest.raises(DataError, match="holds 5 items, expected 60000"):
        idx.read(path, ndim=3, count=60000)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError, match="cannot read"):
        idx.read(path)


@pytest.mark.parametrize("compress", [True, False])
def test_load_made_up_files(tmp_path, compress):
    arrays = fake_files(tmp_path / "d", compress=compress)
    train_images, train_labels, test_images, test_labels = fashion_mnist.load_arrays(tmp_path / "d", verify=False)
    np.testing.assert_array_equal(train_images, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(test_labels, arrays["t10k-labels-idx1-ubyte"])


def test_checksum_mismatch_is_refused(tmp_path):
    fake_files(tmp_path / "d")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is not the Fashion-MNIST file .*"
                                        r"SHA-256 of its uncompressed content is [0-9a-f]{64}, expected c59f468a"):
        fashion_mnist.load_arrays(tmp_path / "d")


def test_offline_error_lists_the_places_searched(tmp_path, monkeypatch):
    (tmp_path / "given").mkdir()  # a folder that does not exist is refused before any search
    (tmp_path / "env").mkdir()
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        fashion_mnist.load_arrays(tmp_path / "given")
    message = str(info.value)
    for place in (tmp_path / "given", tmp_path / "env", tmp_path / "cache", tmp_path / "no-system-copy"):
        assert str(place) in message
    assert "could not download" in message and "apt-get install dataset-fashion-mnist" in message
    assert not any((tmp_path / "given").glob("*")), "no partial download may be left behind"


def test_images_and_labels_must_match(tmp_path):
    fake_files(tmp_path / "d")
    idx.write(tmp_path / "d" / "train-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
    with pytest.raises(DataError, match="40 images but 7 labels"):
        fashion_mnist.load_arrays(tmp_path / "d", verify=False)


@pytest.mark.skipif(REAL_DATA is None, reason=NO_REAL_DATA)
def test_real_files_verify_count_and_balance(tmp_path):
    train_images, train_labels, test_images, test_labels = fashion_mnist.load_arrays(REAL_DATA)
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10
    record = (tmp_path / "cache" / "vgg-frameworks" / "verified.json").read_text()
    assert all(digest in record for digest, _, _ in fashion_mnist.FILES.values())


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on localhost serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Files, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.mark.skipif(REAL_DATA is None, reason=NO_REAL_DATA)
def test_download_from_the_mirror_after_a_bad_one(tmp_path, server, monkeypatch):
    root, url = server
    (root / "good").mkdir()
    (root / "bad").mkdir()
    for name in NAMES:
        (root / "good" / f"{name}.gz").write_bytes((REAL_DATA / f"{name}.gz").read_bytes())
        (root / "bad" / f"{name}.gz").write_bytes(gzip.compress(b"not the data"))
    monkeypatch.setattr(fashion_mnist, "MIRRORS", (url + "bad/", url + "good/"))
    arrays = fashion_mnist.load_arrays()
    assert arrays[0].shape == (60000, 28, 28)
    cached = tmp_path / "cache" / "vgg-frameworks" / "fashion-mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(f"{n}.gz" for n in NAMES)


def test_download_with_wrong_content_is_not_kept(tmp_path, server, monkeypatch):
    root, url = server
    (root / f"{NAMES[0]}.gz").write_bytes(gzip.compress(b"not the data"))
    monkeypatch.setattr(fashion_mnist, "MIRRORS", (url,))
    (tmp_path / "target").mkdir()
    with pytest.raises(DataError, match="wrong content"):
        fashion_mnist.load_arrays(tmp_path / "target")
    assert not any((tmp_path / "target").iterdir())


def test_lookup_order(tmp_path, monkeypatch):
    fake_files(tmp_path / "env", seed=1)
    fake_files(tmp_path / "given", seed=2)
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path / "env"))
    from_env = fashion_mnist.load_arrays(verify=False)[0]
    from_arg = fashion_mnist.load_arrays(tmp_path / "given", verify=False)[0]
    assert not np.array_equal(from_env, from_arg)
    np.testing.assert_array_equal(from_arg, idx.read(tmp_path / "given" / f"{NAMES[0]}.gz"))


def reference_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """Direct per-pixel bilinear interpolation with half-pixel centres (the test's independent truth)."""
    h, w = image.shape
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            y = min(max((i + 0.5) * h / size - 0.5, 0), h - 1)
            x = min(max((j + 0.5) * w / size - 0.5, 0), w - 1)
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, x - x0
            out[i, j] = ((1 - dy) * (1 - dx) * image[y0, x0] + (1 - dy) * dx * image[y0, x1]
                         + dy * (1 - dx) * image[y1, x0] + dy * dx * image[y1, x1])
    return out


@pytest.mark.parametrize("size", [2, 5, 13, 56])
def test_resize_matches_direct_bilinear(size):
    image = np.random.default_rng(size).integers(0, 256, (1, 6, 6), dtype=np.uint8)
    got = batches.to_float(image, size)[0]
    np.testing.assert_allclose(got, reference_bilinear(image[0] / 255.0, size), atol=1e-6)


def test_resize_keeps_values_in_range_and_never_zeroes():
    image = np.full((1, 28, 28), 3, dtype=np.uint8)  # resizing uint8 and then dividing would round to 0
    out = batches.to_float(image, 224)
    assert out.dtype == np.float32 and np.allclose(out, 3 / 255)


def small_split(n=50, **kw) -> batches.Batches:
    rng = np.random.default_rng(0)
    return batches.Batches(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10, **kw)


def test_shuffling_is_seeded():
    a, b, c = (small_split(batch_size=8, shuffle=True, seed=s) for s in (0, 0, 1))
    labels = lambda split, k: np.concatenate([y for _, y in split.epoch(k)])  # noqa: E731
    np.testing.assert_array_equal(labels(a, 0), labels(b, 0))
    assert not np.array_equal(labels(a, 0), labels(c, 0))
    assert not np.array_equal(labels(a, 0), labels(a, 1))
    assert sorted(labels(a, 3)) == sorted(np.arange(50) % 10)
    first, second = (np.concatenate([y for _, y in epoch]) for epoch in (a, a))  # iterating = next epoch
    np.testing.assert_array_equal(first, labels(a, 0))
    np.testing.assert_array_equal(second, labels(a, 1))


@pytest.mark.parametrize("drop_last, count, last", [(False, 7, 2), (True, 6, 8)])
def test_batch_count_and_drop_last(drop_last, count, last):
    split = small_split(batch_size=8, drop_last=drop_last)
    sizes = [len(y) for _, y in split]
    assert len(split) == len(sizes) == count and sizes[-1] == last


def test_stopping_early_releases_the_prefetch_thread():
    split = small_split(n=400, batch_size=4, resize=64)
    for i, _ in enumerate(split):
        if i == 2:
            break
    assert not any(t.name == "vgg-batches" and t.is_alive() for t in threading.enumerate())


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size=0"):
        small_split(batch_size=0)
    with pytest.raises(ValueError, match="layout 'CHW'"):
        small_split(batch_size=4, layout="CHW")
    with pytest.raises(ValueError, match="limit=0"):
        loader.from_arrays(*[np.zeros((2, 28, 28), np.uint8), np.zeros(2)] * 2, 4, limit=0)
    with pytest.raises(ValueError, match="eval_limit=True"):
        loader.from_arrays(*[np.zeros((2, 28, 28), np.uint8), np.zeros(2)] * 2, 4, eval_limit=True)


def test_limit_and_eval_limit_keep_the_first_examples_of_each_split():
    images, labels = np.arange(10 * 28 * 28, dtype=np.uint8).reshape(10, 28, 28), np.arange(10) % 10
    data = loader.from_arrays(images, labels, images, labels, 2, limit=6, eval_limit=3, prefetch=0)
    assert (data.train.num_examples, data.test.num_examples) == (6, 3)
    seen = np.concatenate([y for _, y in data.test])
    assert seen.tolist() == [0, 1, 2]


TENSOR_TYPES = {"torch": "torch.Tensor", "tf": "tensorflow", "jax": "jax", "mxnet": "mxnet.numpy.ndarray"}


@pytest.mark.parametrize("resize", [None, 32])
def test_backend_batches(backend, tmp_path, resize):
    fake_files(tmp_path / "d")
    loaded = backend.load_fashion_mnist(16, resize=resize, data_dir=tmp_path / "d", verify=False)
    train, test = loaded
    assert loaded.classes[0] == "t-shirt" and len(loaded.classes) == 10
    assert (len(train), len(test), train.num_examples) == (3, 1, 40)
    images, labels = next(iter(train))
    side = resize or 28
    shape = (16, 1, side, side) if backend.LAYOUT == "NCHW" else (16, side, side, 1)
    assert tuple(images.shape) == shape and tuple(labels.shape) == (16,)
    array = np.asarray(images.asnumpy() if hasattr(images, "asnumpy") else images)
    assert array.dtype == np.float32 and 0 <= array.min() and array.max() <= 1 and array.max() > 0.9
    name = type(images).__module__ + "." + type(images).__name__
    assert TENSOR_TYPES[backend.__name__.removeprefix("vgg_")].split(".")[0] in name
    assert np.issubdtype(np.asarray(labels.asnumpy() if hasattr(labels, "asnumpy") else labels).dtype, np.integer)


def reference_crop_and_flip(image: np.ndarray, row: int, col: int, flip: bool, padding: int) -> np.ndarray:
    """torchvision's RandomCrop(28, padding) then RandomHorizontalFlip for the drawn offsets, written out."""
    out = np.pad(image, padding)[row:row + image.shape[0], col:col + image.shape[1]]
    return out[:, ::-1] if flip else out


def test_augmentation_is_torchvisions_crop_and_flip_drawn_per_example_and_epoch():
    split = small_split(n=64, batch_size=16, shuffle=True, seed=3, prefetch=0).augmented(True)
    draws = split.draws(0)
    assert set(np.unique(draws.rows)) <= set(range(5)) and 0 < draws.flips.mean() < 1
    order = split.order(0)
    images = np.concatenate([x[:, 0] for x, _ in split.epoch(0)])
    expected = np.stack([reference_crop_and_flip(split.images[i], draws.rows[i], draws.cols[i], draws.flips[i], 2)
                         for i in order]).astype(np.float32) / 255
    np.testing.assert_allclose(images, expected, rtol=0, atol=1e-7)
    again = np.concatenate([x[:, 0] for x, _ in split.epoch(0)])  # (seed, epoch) decides: a resume sees the same
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(images, np.concatenate([x[:, 0] for x, _ in split.epoch(1)]))
    halves = [np.concatenate([x[:, 0] for x, _ in split.sharded(r, 2).epoch(0)]) for r in (0, 1)]  # workers
    np.testing.assert_array_equal(np.concatenate([halves[0][:8], halves[1][:8]]), images[:16])
    rebatched = np.concatenate([x[:, 0] for x, _ in split.rebatch(8).epoch(0)])  # another batch size
    np.testing.assert_array_equal(rebatched, images)


def test_augmentation_off_and_its_refusals():
    plain = small_split(n=16, batch_size=8, shuffle=True, prefetch=0)
    assert plain.augmented(False).augment is None and plain.augmented(Augmentation(0, False)).augment is None
    np.testing.assert_array_equal(np.concatenate([x for x, _ in plain.augmented(None).epoch(0)]),
                                  np.concatenate([x for x, _ in plain.epoch(0)]))
    with pytest.raises(ValueError, match="padding=9 is not allowed"):
        Augmentation(padding=9)


def test_every_backend_trains_on_the_same_augmented_pixels(backend, tmp_path):
    """The loader augments once, before the backend's tensors: every backend sees the same images for a seed."""
    fake_files(tmp_path / "d")
    data = backend.load_fashion_mnist(16, resize=32, data_dir=tmp_path / "d", verify=False, augment=True)
    images = next(iter(data.train))[0]
    array = np.asarray(images.asnumpy() if hasattr(images, "asnumpy") else images)
    plain = loader.load(16, 32, data_dir=tmp_path / "d", verify=False, augment=True, prefetch=0)
    expected = next(iter(plain.train))[0]
    np.testing.assert_array_equal(layouts.images_from_nchw(expected, backend.LAYOUT), array)
