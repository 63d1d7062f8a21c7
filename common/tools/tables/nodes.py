"""docs/distributed.md's tables of several machines, from benchmarks/multinode.py's records (the newest of
each kind): how close a job on several nodes ends to one process, what each engine does when a node dies or
its link goes down, and how a training step scales over nodes and a slower link."""

from __future__ import annotations

from common.core import backends
from common.tools.records import Record, RecordError
from common.tools.tables import Rendered, Store, caption, markdown, number, table


def _newest(store: Store, kind: str) -> Record:
    found = store.where(kind)
    if not found:
        raise RecordError(f"no {kind} record in {store.folder}: run benchmarks/multinode.py")
    return max(found, key=lambda r: r.data["date"])


@table("multinode-parity")
def multinode_parity(store: Store) -> Rendered:
    record = _newest(store, "multinode-parity")
    runs = record.data["details"]["runs"]
    steps = sorted({run["steps"] for run in runs})
    cells: dict[tuple, dict[int, str]] = {}
    for run in runs:
        key = (run["backend"], run["nodes"], run["workers"], ", ".join(f"{k}={v}" for k, v in run["env"].items()))
        cells.setdefault(key, {})[run["steps"]] = f"{run['relative']:.1e}" if "relative" in run else "failed"
    rows = [[name, f"{count} x {workers}" if count > 1 else "1 x 1, one thread (control)",
             backends.BACKENDS[name].engine if count > 1 else "single process", env or "defaults",
             *(found.get(n, "—") for n in steps)] for (name, count, workers, env), found in cells.items()]
    text = markdown(["backend", "nodes x processes", "engine", "settings",
                     *(f"after {n} SGD steps" for n in steps)], rows)
    return Rendered(f"{text}\n\n{caption(record)}", [record.id])


@table("multinode-faults")
def multinode_faults(store: Store) -> Rendered:
    record = _newest(store, "multinode-faults")
    rows = []
    for run in record.data["details"]["runs"]:
        stops = " / ".join(f"{s:.1f}" if s is not None else "did not stop" for s in run["seconds"])
        said = "<br>".join(f"node {i}: " + " / ".join(f"`{line}`" for line in lines)
                           for i, lines in enumerate(run["said"]))
        rows.append([run["backend"], run["fault"], stops, " / ".join(map(str, run["codes"])), said,
                     ", ".join(run["checkpoints"]) or "none", "finished" if run["resumed"] else "failed"])
    text = markdown(["backend", "fault on node 1", "s to stop, node 0 / 1", "exit status", "what each node says",
                     "checkpoints left", "--resume on both"], rows)
    stall = record.data["details"]["stall_timeout_s"]
    return Rendered(f"{text}\n\n{caption(record, what=f'--stall-timeout {stall}; ')}", [record.id])


@table("multinode-scaling")
def multinode_scaling(store: Store) -> Rendered:
    record = _newest(store, "multinode-scaling")
    runs = record.data["details"]["runs"]
    names = list(dict.fromkeys(key.split("|")[0] for key in runs))
    counts = sorted({int(key.split("|")[1]) for key in runs if key.endswith("|none")})
    links = [link for link in record.data["details"]["links"] if link != "none"]
    batch = int(record.data["details"]["job"][record.data["details"]["job"].index("--batch-size") + 1])

    def cell(name: str, count: int, link: str) -> str:
        got = runs.get(f"{name}|{count}|{link}", [])
        if any("error" in g for g in got):
            return "no netem in this kernel" if "qdisc kind is unknown" in got[0]["error"] else "failed"
        result = record.value("train examples/s", backend=name, nodes=count, link=link)
        if result is None:
            return "—"
        return f"{number(result, 0)} ({1000 * batch / result:.0f} ms)"

    rows = []
    for name in names:
        grads = next((g["gradient_mb"] for v in runs.values() for g in v if g.get("backend") == name
                      and "gradient_mb" in g), None)
        rows.append([name, number(grads, 1), *(cell(name, c, "none") for c in counts),
                     *(cell(name, 2, link) for link in links)])
    text = markdown(["backend", "gradient MB per step", *(f"{c} node{'s' if c > 1 else ''}" for c in counts),
                     *(f"2 nodes, {link}" for link in links)], rows)
    return Rendered(f"{text}\n\n{caption(record)}", [record.id])
