"""The training step on a GPU at 224x224, batch 64, in fp32, tf32 and bf16, for torch and JAX: examples/s over
10 steps after 3 warm-up steps (part 3 of ``gpu_check.sh``). A backend without a GPU says so in one line.

    python benchmarks/gpu_step.py --out OUT_DIR

The run's record (``vgg results show``), with the machine and its GPU, goes into ``--out`` (default ./reports);
a run that measured nothing writes none.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.core import arch  # noqa: E402
from common.core.precision import PrecisionWarning  # noqa: E402
from common.runtime.training import Recipe  # noqa: E402
from common.tools import loading, records  # noqa: E402

SIZE, BATCH, WARMUP, TIMED = 224, 64, 3, 10
PRECISIONS = ("fp32", "tf32", "bf16")


def synchronizer(name: str, vgg):
    """How to wait for ``name``'s GPU work, or None where the backend sees no GPU."""
    if name == "torch":
        import torch
        if not torch.cuda.is_available():
            return None
        vgg.init_distributed(device="gpu")
        return torch.cuda.synchronize
    import jax
    if not [d for d in jax.devices() if d.platform == "gpu"]:
        return None
    return lambda: None  # the step returns host floats: already synchronised


def step_ex_s(vgg, precision: str, sync) -> float:
    """Examples/s of ``vgg``'s training step at ``precision`` on random data."""
    model = vgg.VGG(arch.small(), image_size=SIZE, hidden=4096, precision=precision)
    engine = vgg.Engine(model, Recipe(batch_size=BATCH, momentum=0.9))
    engine.reseed(0)
    x = np.random.default_rng(0).random((BATCH, 1, SIZE, SIZE), dtype=np.float32)
    x = x if vgg.LAYOUT == "NCHW" else x.transpose(0, 2, 3, 1).copy()
    batch = vgg.to_tensor(x, np.random.default_rng(1).integers(0, 10, BATCH))
    for _ in range(WARMUP):
        engine.step(*batch, 0.01)
    sync()
    began = time.perf_counter()
    for _ in range(TIMED):
        engine.step(*batch, 0.01)
    sync()
    return TIMED * BATCH / (time.perf_counter() - began)


def measure(names=("torch", "jax")) -> list[dict]:
    """One row per backend and precision measured; a backend without a GPU, or one that fails, prints why."""
    warnings.simplefilter("ignore", PrecisionWarning)
    rows = []
    for name in names:
        try:
            vgg = loading.backend(name)
            sync = synchronizer(name, vgg)
            if sync is None:
                print(f"{name}: no GPU")
                continue
            for precision in PRECISIONS:
                rows.append({"backend": name, "precision": precision, "ex_s": step_ex_s(vgg, precision, sync)})
                print(f"{name} {precision}: {rows[-1]['ex_s']:.0f} examples/s")
        except Exception as exc:  # one line per failure; the rest still runs
            print(f"{name}: failed: {type(exc).__name__}: {exc}")
    return rows


def record(rows: list[dict], **provenance) -> dict:
    """The gpu-check record of ``rows``: examples/s per backend and precision on the GPU."""
    results = [records.result("train_ex_s", "ex/s", r["ex_s"], backend=r["backend"], precision=r["precision"],
                              size=SIZE, device="gpu") for r in rows]
    return records.make("gpu-check", results, details={"batch_size": BATCH, "warmup": WARMUP, "timed": TIMED},
                        **provenance)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="reports", help="the folder for the record (default ./reports)")
    p.add_argument("--command", default=None, help="the command to record (gpu_check.sh passes its own)")
    a = p.parse_args()
    rows = measure()
    if not rows:
        print("gpu_step: nothing measured, so no record")
        return
    print(f"gpu_step: wrote the record {records.write(record(rows, command=a.command), a.out)}")


if __name__ == "__main__":
    main()
