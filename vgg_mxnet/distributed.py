"""Data-parallel MXNet: a Gluon ``Trainer`` over several contexts (kvstore ``device``) in one process, and
kvstore ``dist_sync`` (ps-lite: scheduler, servers, workers from the ``DMLC_*`` environment) across
processes. Both sum the gradients; the Trainer then divides by the global batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from common.runtime import distributed
from common.runtime.distributed import World
from vgg_mxnet.framework import mx

_WORLD: list[World] = [distributed.SINGLE]
_METRICS_KEY = 1 << 20  # a kvstore key no parameter uses: loss sum, correct, count of every step


@dataclass(frozen=True)
class Handle:
    contexts: tuple
    kvstore: object | None  # a dist_sync KVStore, or None (the Trainer makes a "device" store itself)


def init_distributed(devices: int = 1, device: str = "cpu") -> World:
    """Join the ``dist_sync`` kvstore the ``DMLC_*`` environment describes (or stay one process) and take
    ``devices`` contexts; call before building the model."""
    if (world := distributed.already(_WORLD[0], "mxnet", devices, device)) is not None:
        return world
    size = distributed.launched_size("mxnet")
    distributed.check_request("mxnet", size, devices, device)
    if device == "gpu" and mx.context.num_gpus() == 0:
        raise distributed.no_gpu("mxnet", "MXNet's pip wheel is CPU-only; GPUs need the mxnet-cu117 wheel "
                                          "(CUDA 11.7), which cannot share this environment's CUDA 12 stacks")
    kv = mx.kv.create("dist_sync") if size > 1 else None
    make = mx.gpu if device == "gpu" else mx.cpu
    contexts = tuple(make(i) for i in range(devices if device == "cpu" else mx.context.num_gpus()))
    if kv is not None:
        kv.init(_METRICS_KEY, mx.nd.zeros(3))
    engine = "kvstore dist_sync" if kv is not None else ("kvstore device" if len(contexts) > 1 else "single process")
    _WORLD[0] = World(rank=kv.rank if kv else 0, processes=kv.num_workers if kv else 1, devices=len(contexts),
                      device=device, threads=distributed.worker_threads(), engine=engine,
                      handle=Handle(contexts, kv))
    return _WORLD[0]


def current() -> World:
    """The world set up by :func:`init_distributed` (one CPU context until it is called)."""
    return _WORLD[0]


def contexts(world: World) -> list:
    """The contexts ``world``'s engine trains on (one CPU context for a single process)."""
    return list(world.handle.contexts) if world.handle else [mx.cpu()]


def all_sum(values: list[float]) -> list[float]:
    """Sum ``values`` over the worker processes through the kvstore (identity in one process)."""
    handle = _WORLD[0].handle
    if handle is None or handle.kvstore is None:
        return values
    out = mx.nd.zeros(len(values))
    handle.kvstore.pushpull(_METRICS_KEY, mx.nd.array(np.asarray(values, dtype=np.float32)), out=out)
    return out.asnumpy().astype(float).tolist()


def communication_timer(engine) -> Callable[[], float | None]:
    """Always None: the kvstore's push and pull run inside MXNet's engine and report no time of their own."""
    return lambda: None
