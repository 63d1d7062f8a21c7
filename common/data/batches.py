"""Minibatches of 28x28 uint8 images: seeded shuffling, vectorised bilinear resizing per batch, prefetching.

Only the uint8 originals are held in memory (47 MB for Fashion-MNIST); each batch is converted to float32
in [0, 1] *before* resizing (resizing integers and then dividing would zero them) and resized with two
matrix products, so memory stays at a few batches whatever the resolution.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from threadpoolctl import ThreadpoolController

from common.core.layouts import with_channels
from common.data.augment import Augmentation, Draws

ToTensor = Callable[[np.ndarray, np.ndarray], tuple]


@lru_cache(maxsize=32)
def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float32 matrix of 1-D bilinear interpolation with half-pixel centres.

    The same convention as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``,
    ``tf.image.resize(method="bilinear")`` (no antialiasing) and ``jax.image.resize`` when upsampling.
    """
    if size_in < 1 or size_out < 1:
        raise ValueError(f"resize sizes must be positive, got {size_in} -> {size_out}")
    centres = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    centres = np.clip(centres, 0, size_in - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    frac = centres - low
    m = np.zeros((size_out, size_in), dtype=np.float64)
    rows = np.arange(size_out)
    np.add.at(m, (rows, low), 1 - frac)
    np.add.at(m, (rows, high), frac)
    return m.astype(np.float32)


@lru_cache(maxsize=1)
def _numpy_blas():
    """NumPy's own BLAS only: frameworks may bundle one too (MXNet does), and theirs must keep its threads."""
    controller = ThreadpoolController()
    paths = [lib.filepath for lib in controller.lib_controllers
             if lib.user_api == "blas" and "numpy" in lib.filepath]
    return controller.select(filepath=paths)


def to_float(images: np.ndarray, resize: int | None = None) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, resize, resize) in [0, 1], bilinear-resized by ``R @ x @ R.T``."""
    x = images.astype(np.float32) * np.float32(1 / 255)
    if resize is None or (resize, resize) == images.shape[1:]:
        return x
    rows = bilinear_matrix(images.shape[1], resize)
    cols = bilinear_matrix(images.shape[2], resize)
    return np.matmul(rows, np.matmul(x, cols.T))


@dataclass(frozen=True)
class Batches:
    """``(images, labels)`` minibatches of one split, in a backend's tensors and ``layout``.

    Iterating gives the next epoch each time (reshuffled when ``shuffle``); ``epoch(k)`` gives epoch ``k``
    exactly (its order depends only on ``(seed, k)``), which is what a resumed training run needs.
    """

    images: np.ndarray  # uint8 (N, H, W)
    labels: np.ndarray  # integer (N,)
    batch_size: int
    resize: int | None = None
    shuffle: bool = False
    seed: int = 0
    drop_last: bool = False
    layout: str = "NCHW"
    to_tensor: ToTensor | None = None  # (float32 images, int64 labels) -> backend tensors
    prefetch: int = 2  # batches prepared ahead in a background thread; 0 = none
    shard: tuple[int, int] = (0, 1)  # (rank, processes): this process's equal slice of every batch
    augment: Augmentation | None = None  # random crop and flip, drawn per epoch from (seed, epoch)
    _served: list[int] = field(default_factory=lambda: [0], init=False, repr=False, compare=False)  # epochs iterated

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} is not allowed: it must be a positive integer")
        if self.resize is not None and (not isinstance(self.resize, int) or self.resize < 1):
            raise ValueError(f"resize={self.resize!r} is not allowed: it must be a positive integer or None")
        with_channels(self.images[:0], self.layout)  # validates the layout

    @property
    def num_examples(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one image in ``layout``, after resizing."""
        h, w = (self.resize, self.resize) if self.resize else self.images.shape[1:]
        return (1, h, w) if self.layout == "NCHW" else (h, w, 1)

    def __len__(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def rebatch(self, batch_size: int, seed: int | None = None) -> Batches:
        """The same split with another batch size and/or shuffling seed."""
        return replace(self, batch_size=batch_size, seed=self.seed if seed is None else seed)

    def sharded(self, rank: int, processes: int) -> Batches:
        """Process ``rank`` of ``processes`` sees its ``1/processes`` slice of each of these batches, in the
        same order: together the processes see exactly what one process would."""
        return replace(self, shard=(rank, processes))

    def order(self, k: int) -> np.ndarray:
        """Example indices of epoch ``k``: a permutation seeded by ``(seed, k)``, or 0..N-1."""
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng([self.seed, k]).permutation(self.num_examples)

    def augmented(self, augment: Augmentation | bool | None) -> Batches:
        """The same split with ``augment``'s random crops and flips (True: torchvision's usual crop and flip;
        None, False or an inactive one: none)."""
        if augment is True:
            augment = Augmentation()
        return replace(self, augment=augment if augment and augment.active else None)

    def draws(self, k: int) -> Draws | None:
        """Epoch ``k``'s augmentation draws for every example, or None without augmentation."""
        return self.augment.draws(self.seed, k, self.num_examples) if self.augment else None

    def batch(self, indices: np.ndarray, draws: Draws | None = None) -> tuple:
        """The examples at ``indices``, as float32 images in ``layout`` and int64 labels (then ``to_tensor``),
        cropped and flipped as ``draws`` says."""
        originals = draws.apply(self.images[indices], indices) if draws else self.images[indices]
        images = with_channels(to_float(originals, self.resize), self.layout)
        labels = self.labels[indices].astype(np.int64)
        return self.to_tensor(images, labels) if self.to_tensor else (images, labels)

    def _index_batches(self, k: int) -> Iterator[np.ndarray]:
        order = self.order(k)
        rank, processes = self.shard
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start:start + self.batch_size]
            part = len(indices) // processes
            yield indices[rank * part:(rank + 1) * part]

    def epoch(self, k: int) -> Iterator[tuple]:
        """The batches of epoch ``k`` (0-based).

        NumPy's BLAS is held to one thread meanwhile: the resize is cheap on one core, while a
        multi-threaded BLAS spinning next to a training step slowed both ~10x (measured with TF).
        """
        with _numpy_blas().limit(limits=1):
            if self.prefetch <= 0:
                draws = self.draws(k)
                for indices in self._index_batches(k):
                    yield self.batch(indices, draws)
                return
            yield from _prefetched(self, k)

    def __iter__(self) -> Iterator[tuple]:
        k = self._served[0]
        self._served[0] += 1
        return self.epoch(k)


_DONE = object()


def _prefetched(batches: Batches, k: int) -> Iterator[tuple]:
    """Prepare NumPy batches in a daemon thread (NumPy's matmul releases the GIL) while the consumer trains;
    tensors are made in the consumer's thread, since not every framework is happy to be called from another."""
    ready: queue.Queue = queue.Queue(maxsize=batches.prefetch)
    stop = threading.Event()
    plain = replace(batches, to_tensor=None, prefetch=0)

    def produce() -> None:
        try:
            draws = batches.draws(k)
            for indices in batches._index_batches(k):
                item = plain.batch(indices, draws)
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put(exc)

    worker = threading.Thread(target=produce, name="vgg-batches", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield batches.to_tensor(*item) if batches.to_tensor else item
    finally:
        stop.set()  # the consumer stopped early (break, exception) or finished: let the producer go
        worker.join(timeout=5)
