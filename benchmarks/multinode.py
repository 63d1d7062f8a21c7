"""Several machines measured across network namespaces (tests/netns.py, root only): what each engine does when
one node's worker is killed or its link goes down (time to stop, exit status, the line each node prints,
whether --resume finishes), and how each engine's training step scales from 1 to 2 and 4 nodes, with and
without a 1 Gbit/s link (``tc``; latency needs the kernel's netem, and a kernel without it is recorded).

    sudo .venv/bin/python benchmarks/multinode.py --data-dir ../shared/data/fashion-mnist

One record per part (``multinode-faults``, ``multinode-scaling``) into benchmarks/records/; docs/distributed.md
renders its tables from them (``vgg results render``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common.core import backends  # noqa: E402
from common.runtime import checkpoint  # noqa: E402
from common.tools import records  # noqa: E402
from netns import Cluster, Job, unavailable  # noqa: E402
from processes import wait_until  # noqa: E402

FAULTS = ("kill", "link down")
STALL_S = 30
#: links the scaling runs measure, as tc qdisc arguments (None: the bare veth)
LINKS = {"none": None, "1 Gbit/s": ("tbf", "rate", "1gbit", "burst", "256kb", "latency", "50ms"),
         "1 ms + 1 Gbit/s": ("netem", "delay", "1ms", "rate", "1gbit"),
         "10 ms + 1 Gbit/s": ("netem", "delay", "10ms", "rate", "1gbit")}


def fault_args(name: str, data: Path, out: Path) -> list[str]:
    return ["train", "--backend", name, "--arch", "tiny", "--resize", "32", "--hidden", "64", "--epochs", "8",
            "--batch-size", "32", "--limit", "1024", "--data-dir", str(data), "--no-progress", "--out", str(out),
            "--stall-timeout", str(STALL_S)]


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return re.sub(r"pid \d+", "pid N", lines[-1])[:240] if lines else ""


def told(text: str) -> list[str]:
    """What a node's ``vgg train`` told the user at the end: its worker's error line, if any, and its own."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    worker = [line for line in lines if line.startswith("[") and "error:" in line]
    return [re.sub(r"pid \d+", "pid N", line)[:300] for line in (worker[-1:] + lines[-1:])]


def fault(name: str, kind: str, data: Path, scratch: Path) -> dict:
    """One fault on node 1 of a 2-node job after its first checkpoint: when each node stopped, what it said,
    and whether --resume on both then finished."""
    out = scratch / f"{name}-{kind.replace(' ', '-')}"
    args = fault_args(name, data, out)
    with Cluster(2) as cluster:
        job = Job(cluster, args, scratch / "logs", f"{name}-{kind}")
        first = checkpoint.path_for(out / "checkpoints", 1)
        wait_until(lambda: first.exists() or any(n.proc.poll() is not None for n in job.nodes), 600)
        if kind == "kill":
            os.kill(job.workers(1)[0], signal.SIGKILL)
        else:
            cluster.link(1, up=False)
        at = time.monotonic()
        stopped = job.wait(STALL_S * 4)
        if kind != "kill":
            cluster.link(1, up=True)
        kept = [p.name for p in checkpoint.list_checkpoints(out / "checkpoints")]
        resumed = Job(cluster, [*args, "--resume"], scratch / "logs", f"{name}-{kind}-resume")
        resumed_ok = resumed.wait(900) and resumed.codes() == [0, 0]
    return {"backend": name, "fault": kind, "stopped": stopped, "codes": job.codes(), "checkpoints": kept,
            "seconds": [round(n.ended - at, 1) if n.ended else None for n in job.nodes],
            "said": [told(n.text()[1]) for n in job.nodes], "resumed": resumed_ok}


#: the parity jobs' lengths: 3 SGD steps, as the distributed parity takes, and 2 epochs of 20 steps
STEPS = {3: ("72", "1"), 40: ("480", "2")}


def parity_args(name: str, data: Path, out: Path, steps: int = 3) -> list[str]:
    limit, epochs = STEPS[steps]
    return ["train", "--backend", name, "--arch", "tiny", "--resize", "32", "--hidden", "64", "--dropout", "0",
            "--epochs", epochs, "--batch-size", "24", "--limit", limit, "--eval-limit", "96", "--data-dir",
            str(data), "--no-progress", "--out", str(out)]


#: (backend, nodes, workers per node, extra environment): the layouts the parity part compares with one process;
#: 1 node is the control: one process on one thread, whose sums run in another order than on two
LAYOUTS = [*((n, 2, 1, {}) for n in backends.NAMES), ("mxnet", 2, 1, {"MXNET_MKLDNN_ENABLED": "0"}),
           ("torch", 2, 2, {}), ("jax", 2, 2, {}), ("torch", 3, 1, {}), *((n, 1, 1, {}) for n in backends.NAMES)]


def parity(name: str, count: int, workers: int, env: dict[str, str], data: Path, scratch: Path,
           steps: int) -> dict:
    """The largest relative difference of any weight tensor between the job of ``steps`` SGD steps on
    ``count`` nodes of ``workers`` processes and the same job in one process (both with ``env``)."""
    from common.core import tolerances
    from processes import vgg_cli
    from test_multinode import model_weights
    tag = f"{name}-{count}x{workers}-{steps}{'-' + '-'.join(env) if env else ''}"
    one, many = scratch / f"parity-one-{tag}", scratch / f"parity-{tag}"
    proc = vgg_cli(*parity_args(name, data, one, steps), env=env)
    _, err = proc.communicate()
    row = {"backend": name, "nodes": count, "workers": workers, "env": env, "steps": steps}
    if proc.returncode:
        return {**row, "error": last_line(err)}
    if count == 1:
        proc = vgg_cli(*parity_args(name, data, many, steps), "--threads", "1", env=env)
        _, err = proc.communicate()
        if proc.returncode:
            return {**row, "error": last_line(err)}
        return {**row, "threads": 1, "relative": tolerances.relative_tree(model_weights(name, one),
                                                                          model_weights(name, many))}
    with Cluster(count) as cluster:
        job = Job(cluster, [*parity_args(name, data, many, steps), "--workers", str(workers)], scratch / "logs",
                  f"parity-{tag}", env=env)
        if not (job.wait(900) and job.codes() == [0] * count):
            return {**row, "error": last_line(job.nodes[0].text()[1])}
    return {**row, "relative": tolerances.relative_tree(model_weights(name, one), model_weights(name, many))}


def scaling_args(name: str, data: Path, out: Path, limit: int) -> list[str]:
    return ["train", "--backend", name, "--arch", "small", "--resize", "32", "--epochs", "2", "--batch-size", "64",
            "--limit", str(limit), "--eval-limit", "64", "--data-dir", str(data), "--no-progress", "--threads", "1",
            "--out", str(out), "--overwrite"]


def scale(name: str, count: int, link: str, data: Path, scratch: Path, limit: int) -> dict:
    """Examples/s of the second epoch of the small VGG (the first compiles and warms up) on ``count`` nodes,
    one process and one thread each, pinned to the cores in turn, over ``link``."""
    out = scratch / f"scale-{name}-{count}-{link.replace(' ', '').replace('/', '')}"
    cores = os.cpu_count() or 1
    args = scaling_args(name, data, out, limit)
    with Cluster(count) as cluster:
        if count == 1:  # one process, no --nodes: the baseline the nodes are compared with
            logs = scratch / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / f"scale-{name}-1.out", "w") as o, open(logs / f"scale-{name}-1.err", "w") as e:
                proc = cluster.vgg(0, *args, stdout=o, stderr=e, preexec_fn=lambda: os.sched_setaffinity(0, {0}))
            ok = proc.wait(1200) == 0
            said, err = (logs / f"scale-{name}-1.out").read_text(), (logs / f"scale-{name}-1.err").read_text()
            return _scaled(name, count, link, out, said, err, ok)
        if (qdisc := LINKS[link]) is not None:
            for i in range(count):
                if refused := cluster.shape(i, *qdisc):
                    return {"backend": name, "nodes": count, "link": link, "error": refused}
        job = Job(cluster, args, scratch / "logs", f"scale-{name}-{count}", cores=[i % cores for i in range(count)])
        ok = job.wait(1200) and job.codes() == [0] * count
    return _scaled(name, count, link, out, "".join(n.text()[0] for n in job.nodes), job.nodes[0].text()[1], ok)


def _scaled(name: str, count: int, link: str, out: Path, said: str, err: str, ok: bool) -> dict:
    if not ok:
        return {"backend": name, "nodes": count, "link": link, "error": last_line(err)}
    row = json.loads((out / "history.json").read_text())["rows"][-1]  # the second epoch: compiled, warm
    params = int(re.search(r"([\d,]+) parameters", said).group(1).replace(",", ""))
    return {"backend": name, "nodes": count, "link": link, "examples_per_sec": row["examples_per_sec"],
            "gradient_mb": params * 4 / 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True, help="the real Fashion-MNIST files")
    p.add_argument("--backends", default=",".join(backends.NAMES))
    p.add_argument("--parts", default="parity,faults,scaling")
    p.add_argument("--nodes", default="1,2,4", help="node counts of the scaling part")
    p.add_argument("--limit", type=int, default=1024, help="training examples of a scaling epoch")
    p.add_argument("--rounds", type=int, default=2, help="scaling runs per cell, interleaved")
    p.add_argument("--records", type=Path, default=records.STORE)
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still deletes its namespaces
    if why := unavailable():
        print(f"multinode: cannot make namespace nodes here: {why}", file=sys.stderr)
        return 2
    names = [n for n in a.backends.split(",") if n]
    parts = a.parts.split(",")
    with tempfile.TemporaryDirectory(prefix="vgg-multinode-") as scratch_dir:
        scratch = Path(scratch_dir)
        if "parity" in parts:
            done = [parity(n, c, w, env, a.data_dir, scratch, steps) for steps in STEPS
                    for n, c, w, env in LAYOUTS if n in names]
            for row in done:
                print(json.dumps(row), flush=True)
            results = [records.result("relative difference", "", r.get("relative"), backend=r["backend"],
                                      nodes=r["nodes"], workers=r["workers"], steps=r["steps"],
                                      env=" ".join(f"{k}={v}" for k, v in r["env"].items()) or None)
                       for r in done]
            rec = records.make("multinode-parity", results, details={"runs": done, "jobs": {
                steps: parity_args("NAME", Path("DATA"), Path("OUT"), steps) for steps in STEPS}})
            print(f"multinode: wrote the record {records.write(rec, a.records)}")
        if "faults" in parts:
            rows = []
            for kind in FAULTS:
                for name in names:
                    rows.append(fault(name, kind, a.data_dir, scratch))
                    print(json.dumps(rows[-1]), flush=True)
            results = [records.result("seconds to stop", "s", max(s for s in r["seconds"] if s is not None)
                                      if all(s is not None for s in r["seconds"]) else None,
                                      backend=r["backend"], fault=r["fault"]) for r in rows]
            rec = records.make("multinode-faults", results, details={"runs": rows, "stall_timeout_s": STALL_S,
                                                                    "job": fault_args("NAME", Path("DATA"),
                                                                                      Path("OUT"))})
            print(f"multinode: wrote the record {records.write(rec, a.records)}")
        if "scaling" in parts:
            runs: dict[tuple, list[dict]] = {}
            counts = [int(n) for n in a.nodes.split(",")]
            cells = [(n, c, "none") for n in names for c in counts] + [(n, 2, link) for n in names
                                                                       for link in LINKS if link != "none"]
            for _ in range(a.rounds):
                for name, count, link in cells:
                    if runs.get((name, count, link)) and "error" in runs[(name, count, link)][0]:
                        continue
                    got = scale(name, count, link, a.data_dir, scratch, a.limit)
                    runs.setdefault((name, count, link), []).append(got)
                    print(json.dumps(got), flush=True)
            results = []
            for (name, count, link), got in runs.items():
                values = [g["examples_per_sec"] for g in got if "examples_per_sec" in g]
                results.append(records.result("train examples/s", "examples/s",
                                              statistics.median(values) if values else None,
                                              samples=values or None, backend=name, nodes=count, link=link))
            rec = records.make("multinode-scaling", results, details={
                "runs": {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in runs.items()}, "links": LINKS,
                "job": scaling_args("NAME", Path("DATA"), Path("OUT"), a.limit)})
            print(f"multinode: wrote the record {records.write(rec, a.records)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
