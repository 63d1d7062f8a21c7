"""Data-parallel JAX: one ``Mesh`` with a ``data`` axis over every device of every process, parameters and
optimizer state replicated, each batch sharded along it with ``NamedSharding``; the jitted step is
unchanged (XLA inserts the gradient all-reduce). Several CPU devices per process come from
``jax_num_cpu_devices``; several processes from ``jax.distributed.initialize`` (gloo collectives on CPU)."""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common.runtime import distributed
from common.runtime.distributed import World

_WORLD: list[World] = [distributed.SINGLE]


def init_distributed(devices: int = 1, device: str = "cpu") -> World:
    """Set the CPU device count and join the processes ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
    and ``JAX_PROCESS_ID`` describe (or stay one process); call before any JAX computation."""
    if (world := distributed.already(_WORLD[0], "jax", devices, device)) is not None:
        return world
    size = distributed.launched_size("jax")
    distributed.check_request("jax", size, devices, device)
    try:
        if device == "cpu" and devices != 1:
            jax.config.update("jax_num_cpu_devices", devices)
        if size > 1:
            jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], num_processes=size,
                                       process_id=distributed.launched_rank("jax"),
                                       initialization_timeout=int(os.environ.get("VGG_JAX_INIT_TIMEOUT", "120")),
                                       heartbeat_timeout_seconds=30)
    except RuntimeError as exc:
        raise distributed.DistributedError(
            f"jax: init_distributed must come before any JAX computation ({exc})") from None
    if device == "gpu" and jax.default_backend() != "gpu":
        raise distributed.no_gpu("jax", "install JAX with CUDA: pip install 'jax[cuda12]'")
    local = jax.local_devices()[:devices] if device == "cpu" else jax.local_devices()
    mesh = Mesh(np.array(jax.devices()), ("data",)) if size * len(local) > 1 else None
    engine = "single process" if mesh is None else \
        ("jax.distributed + " if size > 1 else "") + "Mesh/NamedSharding"
    _WORLD[0] = World(rank=jax.process_index(), processes=size, devices=len(local), device=device,
                      threads=distributed.worker_threads(), engine=engine, handle=mesh)
    return _WORLD[0]


def current() -> World:
    """The world set up by :func:`init_distributed` (one device until it is called)."""
    return _WORLD[0]


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("data"))


def global_batch(mesh: Mesh, local: np.ndarray) -> jax.Array:
    """One global array, sharded along ``data``, from every process's own slice of the batch."""
    return jax.make_array_from_process_local_data(batch_sharded(mesh), np.asarray(local))


def replicate(mesh: Mesh, tree):
    """Every array of ``tree`` (the same values in every process) as a global array replicated on every
    device; ``jax.device_put`` cannot target another process's devices, this can. PRNG keys included."""
    target = replicated(mesh)

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == target:
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        return everywhere(mesh, np.asarray(x))

    return jax.tree.map(put, tree)


def everywhere(mesh: Mesh, value: np.ndarray) -> jax.Array:
    """A global array replicated on every device, from the same ``value`` in every process."""
    return jax.make_array_from_process_local_data(replicated(mesh), np.asarray(value))


def communication_timer(engine) -> Callable[[], float | None]:
    """Always None: XLA runs the all-reduce inside the jitted step and reports no time of its own."""
    return lambda: None
