"""Data-parallel training, the framework-neutral part: who this worker is, how a global batch is split,
how many threads each worker gets, and what each framework's launcher puts in the environment.

The engines themselves are the frameworks' own (``vgg_<fw>/distributed.py``); this module only holds what
all four mean the same by: ``--batch-size`` is the global batch, process ``r`` of ``W`` takes the ``r``-th
``1/W`` of every batch one process would see, gradients are averaged over the global batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.core import backends
from common.runtime.machine import cores

if TYPE_CHECKING:
    from common.runtime.nodes import Nodes

DEVICE_KINDS = ("cpu", "gpu")

class DistributedError(ValueError):
    """A distributed set-up that cannot work: bad worker/device counts, no GPU, a busy port, a dead worker."""


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run: ``rank`` of ``processes``, each with ``devices`` devices.

    ``handle`` is the framework's own object (strategy, mesh, kvstore, process group name) for its engine.
    """

    rank: int = 0
    processes: int = 1
    devices: int = 1
    device: str = "cpu"
    threads: int | None = None
    engine: str = "single process"
    handle: Any = field(default=None, compare=False, repr=False)

    @property
    def replicas(self) -> int:
        """Model copies that each take a slice of the global batch."""
        return self.processes * self.devices

    @property
    def is_chief(self) -> bool:
        """Only the chief (rank 0) writes checkpoints, history and the model."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.replicas > 1

    def describe(self) -> str:
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''} per worker" if self.threads else ""
        return (f"{self.engine}: {self.processes} process{'es' if self.processes > 1 else ''} x "
                f"{self.devices} {self.device} device{'s' if self.devices > 1 else ''}{threads}")


SINGLE = World()


def already(world: World, backend: str, devices: int, device: str) -> World | None:
    """The world of an earlier ``init_distributed`` call, if any; a different request is refused, since
    TensorFlow and JAX fix their devices once per process."""
    if world is SINGLE:
        return None
    if (world.devices, world.device) != (devices, device):
        raise DistributedError(f"{backend}: init_distributed was already called with devices={world.devices}, "
                               f"device={world.device!r}; a process sets its devices once")
    return world


def worker_seed(seed: int, index: int) -> int:
    """The dropout seed of worker (or device) ``index``: ``seed`` itself for index 0, so a single process
    draws what it always drew, and a different reproducible stream for every other index."""
    if index == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def check_split(replicas: int, batch_size: int, num_examples: int, drop_last: bool = False) -> None:
    """Refuse a split that cannot give every replica an equal share of every batch, one process's batches."""
    if replicas < 1:
        raise DistributedError(f"workers x devices = {replicas} is not allowed: it must be at least 1")
    if replicas == 1:
        return
    if replicas > batch_size:
        raise DistributedError(f"{replicas} workers x devices is more than the batch size {batch_size}: "
                               "every worker needs at least one example of every batch")
    if batch_size % replicas:
        raise DistributedError(f"--batch-size {batch_size} is not divisible by {replicas} workers x devices: "
                               "every worker takes an equal slice of the global batch")
    rest = num_examples % batch_size
    if rest and not drop_last and rest % replicas:
        raise DistributedError(
            f"the last batch of an epoch has {rest} examples ({num_examples} % {batch_size}), which "
            f"{replicas} workers x devices cannot share equally; choose a --batch-size or --limit "
            f"that leaves a multiple of {replicas}")


def shard_of(n: int, rank: int, processes: int) -> slice:
    """Process ``rank``'s slice of a global batch of ``n`` examples (``n`` divisible by ``processes``)."""
    if processes == 1:
        return slice(0, n)
    part = n // processes
    return slice(rank * part, (rank + 1) * part)


def threads_per_worker(workers: int, devices: int = 1, threads: int | None = None) -> int:
    """``threads`` if given, else the machine's cores shared equally by every worker and device."""
    if threads is not None:
        if threads < 1:
            raise DistributedError(f"--threads {threads} is not allowed: it must be at least 1")
        return threads
    return max(1, cores() // max(1, workers * devices))


def worker_threads(devices: int = 1) -> int:
    """Threads for this worker: what a launcher set (``VGG_THREADS``, else ``OMP_NUM_THREADS``), else the
    cores shared by this process's devices."""
    for name in ("VGG_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(name, "").isdigit() and int(os.environ[name]) > 0:
            return int(os.environ[name])
    return max(1, cores() // max(1, devices))


# --- the environment contract between a launcher and its workers: written and read here only ---------------

HOST = "127.0.0.1"  # workers talk over loopback only


#: the loopback interface on Linux, where gloo and NCCL open their sockets for a job on one machine
LOOPBACK_INTERFACE = "lo"
#: the file a launched worker touches at every training step, so its launcher can tell a hung job
HEARTBEAT_VARIABLE = "VGG_HEARTBEAT"
_TORCH_STORE = "VGG_TORCH_STORE"
#: on several nodes: the address torch's TCP store is bound to on node 0 (torch alone would bind every interface)
_TORCH_STORE_HOST = "VGG_TORCH_STORE_HOST"


def worker_environments(backend: str, env: dict[str, str], workers: int, threads: int, port: int,
                        free_port: Callable[[], int], scratch: Path,
                        nodes: Nodes | None = None) -> list[dict[str, str]]:
    """The environment of each worker process of ``backend`` this launcher starts, rank by rank: ``env`` plus
    the framework's own variables and a heartbeat file in ``scratch``. On one machine (``nodes`` None) with
    ``port`` for the coordinator (torch: a file store in ``scratch``), everything bound to loopback where the
    framework allows it; on several, this node's workers of the job ``nodes`` describes, each engine told
    the interface and address of this node (common.runtime.nodes)."""
    if nodes is not None:
        return _node_environments(backend, env, workers, threads, scratch, nodes)
    beats = [{HEARTBEAT_VARIABLE: str(scratch / f"heartbeat-{r}")} for r in range(workers)]
    if backend == "torch":  # torchrun's TCP stores would listen on every interface; a file store listens on none
        store = {_TORCH_STORE: (scratch / "torch-store").as_uri(), "WORLD_SIZE": str(workers),
                 "LOCAL_WORLD_SIZE": str(workers), "GLOO_SOCKET_IFNAME": LOOPBACK_INTERFACE,
                 "NCCL_SOCKET_IFNAME": LOOPBACK_INTERFACE}
        return [{**env, **store, **beats[r], "RANK": str(r), "LOCAL_RANK": str(r)} for r in range(workers)]
    if backend == "tf":
        ports = [port] + [free_port() for _ in range(workers - 1)]
        cluster = {"worker": [f"{HOST}:{p}" for p in ports]}
        return [{**env, **beats[r], "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                                        "index": r}})}
                for r in range(workers)]
    if backend == "jax":
        return [{**env, **beats[r], **_jax_threads(env, threads), "JAX_COORDINATOR_ADDRESS": f"{HOST}:{port}",
                 "JAX_COORDINATOR_BIND_ADDRESS": f"{HOST}:{port}",  # its default is [::], every interface
                 "JAX_NUM_PROCESSES": str(workers), "JAX_PROCESS_ID": str(r)}
                for r in range(workers)]
    if backend == "mxnet":
        # ps-lite ranks workers by (host, port) at the scheduler: ascending ports give rank = launch order
        ports = sorted(free_port() for _ in range(workers))
        return [{**mxnet_environment(env, workers, port), **beats[r], "DMLC_ROLE": "worker", "PORT": str(p)}
                for r, p in enumerate(ports)]
    raise ValueError(f"no launcher environment for backend {backend!r}")


def _jax_threads(env: dict[str, str], threads: int) -> dict[str, str]:
    flags = env.get("XLA_FLAGS", "")
    if threads == 1:  # XLA's CPU client otherwise starts a thread per core in every worker
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return {"XLA_FLAGS": flags.strip()}


def _node_environments(backend: str, env: dict[str, str], workers: int, threads: int, scratch: Path,
                       nodes: Nodes) -> list[dict[str, str]]:
    """This node's ``workers`` of a job over ``nodes``: global rank = node rank x workers + local rank, every
    node running the same number of workers; ports as common.runtime.nodes lays them out."""
    world, base, p = nodes.count * workers, nodes.rank * workers, nodes.port
    out = []
    for k in range(workers):
        rank = base + k
        mine = {**env, HEARTBEAT_VARIABLE: str(scratch / f"heartbeat-{rank}")}
        if backend == "torch":  # torch's store on node 0, bound to its address (vgg_torch), gloo on this interface
            mine.update(MASTER_ADDR=nodes.master, MASTER_PORT=str(p), WORLD_SIZE=str(world), RANK=str(rank),
                        LOCAL_RANK=str(k), LOCAL_WORLD_SIZE=str(workers), GLOO_SOCKET_IFNAME=nodes.interface,
                        NCCL_SOCKET_IFNAME=nodes.interface, **{_TORCH_STORE_HOST: nodes.master})
        elif backend == "tf":
            cluster = {"worker": [f"{a}:{p + j}" for a in nodes.addresses for j in range(workers)]}
            mine["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": rank}})
        elif backend == "jax":
            mine.update(_jax_threads(env, threads), JAX_COORDINATOR_ADDRESS=f"{nodes.master}:{p}",
                        JAX_COORDINATOR_BIND_ADDRESS=f"{nodes.master}:{p}", JAX_NUM_PROCESSES=str(world),
                        JAX_PROCESS_ID=str(rank))
        elif backend == "mxnet":
            mine = {**mxnet_environment(mine, world, p, nodes.master, nodes.address), "DMLC_ROLE": "worker",
                    "PORT": str(p + 2 + k)}
        else:
            raise ValueError(f"no launcher environment for backend {backend!r}")
        out.append(mine)
    return out


def torch_rendezvous() -> dict[str, Any]:
    """``init_process_group``'s rendezvous: our launcher's file store on one machine (``init_method``), its
    TCP store on node 0's address across machines (``store_host``, ``store_port``), or nothing (torch's
    ``env://``, as torchrun and cluster launchers set it); with this worker's rank and the world size."""
    env = os.environ
    ranks = {"rank": int(env.get("RANK", "0")), "world_size": int(env.get("WORLD_SIZE", "1"))}
    if env.get(_TORCH_STORE):
        return {"init_method": env[_TORCH_STORE], **ranks}
    if env.get(_TORCH_STORE_HOST):
        return {"store_host": env[_TORCH_STORE_HOST], "store_port": int(env["MASTER_PORT"]), **ranks}
    return {}


def heartbeat() -> None:
    """Tell this worker's launcher it is making progress (a touch of the file it watches); no-op unlaunched."""
    if path := os.environ.get(HEARTBEAT_VARIABLE):
        Path(path).touch()


def mxnet_environment(env: dict[str, str], workers: int, port: int, root: str = HOST,
                      host: str = HOST) -> dict[str, str]:
    """What every node of an MXNet job (scheduler, server, workers) reads: where the scheduler is, how many,
    and the address this process binds (ps-lite otherwise takes the first non-loopback interface)."""
    return {**env, "DMLC_PS_ROOT_URI": root, "DMLC_PS_ROOT_PORT": str(port), "DMLC_NUM_SERVER": "1",
            "DMLC_NUM_WORKER": str(workers), "DMLC_NODE_HOST": host}


def launched_size(backend: str) -> int:
    """The number of worker processes an external or our own launcher started for ``backend``, read from
    the framework's own environment variables; 1 when this process was not launched as a worker."""
    env = os.environ
    if backend == "torch":
        return int(env.get("WORLD_SIZE", "1"))
    if backend == "tf":
        cluster = _tf_config().get("cluster", {})
        return len(cluster.get("worker", [])) + len(cluster.get("chief", [])) or 1
    if backend == "jax":
        if not env.get("JAX_COORDINATOR_ADDRESS"):
            return 1
        return int(env.get("JAX_NUM_PROCESSES", "1"))
    if backend == "mxnet":
        return int(env.get("DMLC_NUM_WORKER", "1")) if env.get("DMLC_ROLE") == "worker" else 1
    raise ValueError(f"unknown backend {backend!r}")


def launched_rank(backend: str) -> int:
    """This worker's rank as its launcher set it (torch and MXNet learn theirs from their engine instead)."""
    if backend == "tf":
        return int(_tf_config().get("task", {}).get("index", 0))
    if backend == "jax":
        return int(os.environ.get("JAX_PROCESS_ID", "0"))
    raise ValueError(f"{backend} takes its rank from its engine, not from the environment")


def _tf_config() -> dict:
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def check_request(backend: str, processes: int, devices: int, device: str) -> None:
    """Refuse what ``backend``'s engines cannot do: DDP has no in-process devices (one process per
    device), and MultiWorkerMirroredStrategy takes one CPU per worker."""
    if device not in DEVICE_KINDS:
        raise DistributedError(f"--device {device!r} is not allowed: choose one of {', '.join(DEVICE_KINDS)}")
    for name, value in (("--workers", processes), ("--devices", devices)):
        if not isinstance(value, int) or value < 1:
            raise DistributedError(f"{name} {value} is not allowed: it must be at least 1")
    if devices > 1 and not backends.BACKENDS[backend].in_process_devices:
        raise DistributedError(
            f"{backend}: --devices {devices} is not supported: {backends.BACKENDS[backend].engine} runs one "
            "process per device; use --workers instead")
    if devices > 1 and processes > 1 and backend == "tf" and device == "cpu":
        raise DistributedError(
            "tf: --devices with --workers on CPU is not supported: MultiWorkerMirroredStrategy uses one CPU "
            "device per worker; use --workers alone or --devices alone")


def no_gpu(backend: str, install: str) -> DistributedError:
    """The error for ``--device gpu`` on a machine (or build) without one."""
    return DistributedError(f"{backend}: --device gpu but no GPU is visible to this {backend} build; {install}")
