"""Data-parallel PyTorch: DistributedDataParallel over a process group (gloo on CPU, nccl on CUDA), one
process per device, started by the project's launcher (on one machine a file store, no listening port; across
machines a TCP store on node 0's address) or by ``torchrun`` (which sets RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""

from __future__ import annotations

import atexit
import os
import socket
from collections.abc import Callable

import torch
import torch.distributed as dist

from common.runtime import distributed
from common.runtime.distributed import World
from vgg_torch import framework

_WORLD: list[World] = [distributed.SINGLE]


def init_distributed(devices: int = 1, device: str = "cpu") -> World:
    """Join the process group the launcher describes in the environment (or stay a single process).

    Call before building the model. ``devices`` must be 1: DDP runs one process per device, so more
    devices means more ``--workers``."""
    if (world := distributed.already(_WORLD[0], "torch", devices, device)) is not None:
        return world
    size = distributed.launched_size("torch")
    distributed.check_request("torch", size, devices, device)
    if device == "gpu" and not framework.has_gpu:
        raise distributed.no_gpu("torch", "install a CUDA build of PyTorch (pip install torch, without +cpu)")
    threads = distributed.worker_threads()
    torch.set_num_threads(threads)
    if size > 1 and not dist.is_initialized():
        if device == "gpu":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if device == "gpu" else "gloo", **_rendezvous())
        # PyTorch's documented end of a distributed job; left to interpreter teardown instead, gloo's threads
        # were sometimes still alive and the worker died with "terminate called without an active exception"
        atexit.register(_destroy)
    rank = dist.get_rank() if size > 1 else 0
    engine = f"DistributedDataParallel ({dist.get_backend()})" if size > 1 else "single process"
    _WORLD[0] = World(rank=rank, processes=size, devices=1, device=device, threads=threads, engine=engine)
    return _WORLD[0]


def _rendezvous() -> dict:
    """``init_process_group``'s rendezvous arguments; across machines, a TCP store that rank 0 serves on node
    0's address only: torch's own would bind every interface, so it gets a socket already bound
    (``master_listen_fd``, torch's documented way)."""
    found = distributed.torch_rendezvous()
    if "store_host" not in found:
        return found
    host, port, rank, world = found["store_host"], found["store_port"], found["rank"], found["world_size"]
    fd = None
    if rank == 0:
        try:
            fd = socket.create_server((host, port)).detach()
        except OSError as exc:
            raise distributed.DistributedError(
                f"torch: cannot listen on {host}:{port} for the job's store ({exc.strerror}); pass another --port, "
                "the same on every node") from None
    store = dist.TCPStore(host, port, world, is_master=rank == 0, master_listen_fd=fd)
    return {"store": store, "rank": rank, "world_size": world}


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> World:
    """The world set up by :func:`init_distributed` (a single process until it is called)."""
    return _WORLD[0]


def all_sum(values: list[float]) -> list[float]:
    """Sum ``values`` over the processes (identity in a single process)."""
    if current().processes == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def communication_timer(engine) -> Callable[[], float | None]:
    """Milliseconds per step of DDP's gradient all-reduce, from DDP's own timers (its prototype logging
    API, told to time every step); None in a single process."""
    if not engine.world.distributed:
        return lambda: None
    engine.net._set_ddp_runtime_logging_sample_rate(1)

    def read() -> float | None:
        comm = engine.net._get_ddp_logging_data().get("avg_backward_comm_time")
        return comm / 1e6 if comm else None

    return read
