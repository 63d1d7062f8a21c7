"""Data-parallel TensorFlow: ``MirroredStrategy`` over the devices of one process (logical CPUs here, all
GPUs where present) or ``MultiWorkerMirroredStrategy`` across the processes ``TF_CONFIG`` lists. The
strategy must exist before any other TensorFlow op, so :func:`init_distributed` comes first."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from common.runtime import distributed
from common.runtime.distributed import World
from vgg_tf.framework import tf

_WORLD: list[World] = [distributed.SINGLE]


def init_distributed(devices: int = 1, device: str = "cpu") -> World:
    """Create the strategy the environment and ``devices`` ask for (or stay a single device).

    Call before building the model: the model's variables are created in the strategy's scope."""
    if (world := distributed.already(_WORLD[0], "tf", devices, device)) is not None:
        return world
    size = distributed.launched_size("tf")
    distributed.check_request("tf", size, devices, device)
    threads = distributed.worker_threads(devices)
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise distributed.no_gpu("tf", "install TensorFlow with CUDA: pip install 'tensorflow[and-cuda]'")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1 if devices == 1 else devices)
        if device == "cpu" and devices > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
            tf.config.set_visible_devices([], "GPU")
    except RuntimeError as exc:
        raise distributed.DistributedError(
            f"tf: init_distributed must come before any TensorFlow op or model ({exc})") from None
    if size > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        rank = distributed.launched_rank("tf")
        engine = "MultiWorkerMirroredStrategy"
    elif devices > 1 or device == "gpu":
        names = [d.name for d in tf.config.list_logical_devices("GPU" if device == "gpu" else "CPU")]
        strategy = tf.distribute.MirroredStrategy(names[:devices] if device == "cpu" else None)
        rank, engine = 0, "MirroredStrategy"
    else:
        strategy, rank, engine = None, 0, "single process"
    local = strategy.num_replicas_in_sync // size if strategy else 1
    _WORLD[0] = World(rank=rank, processes=size, devices=local, device=device, threads=threads, engine=engine,
                      handle=strategy)
    return _WORLD[0]


def current() -> World:
    """The world set up by :func:`init_distributed` (a single device until it is called)."""
    return _WORLD[0]


def scope():
    """The strategy's scope, in which variables become mirrored; a no-op context for a single device."""
    strategy = _WORLD[0].handle
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def communication_timer(engine) -> Callable[[], float | None]:
    """Always None: TensorFlow runs the all-reduce inside the compiled step and reports no time of its own."""
    return lambda: None
