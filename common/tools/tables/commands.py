"""How long the README's commands take: the main job (`.ci/main`, a vgg compare run) and the suite
(`.ci/test`, a record per environment), each as an inline figure naming its machine and date."""

from __future__ import annotations

import re

from common.tools.records import Record
from common.tools.tables import Rendered, Store, table

#: the `.ci/main` run the README quotes
MAIN_JOB = "20261207T002520-compare-intel-f6m207"
#: the `.ci/test` runs the README quotes, one per environment
SUITE = ("all", "modern")


def machine_words(record: Record) -> str:
    """'2-core Intel Xeon (AVX-512)': the machine as a sentence names it."""
    m = record.data["machine"]
    name = re.sub(r"\((R|TM)\)|\bProcessor\b|\(family.*", "", m.get("model_name") or m["cpu"]).split(",")[0]
    isa = " (AVX-512)" if "avx512f" in m.get("isa", []) else " (AVX2)" if "avx2" in m.get("isa", []) else ""
    return f"{m['cores']}-core {' '.join(name.split())}{isa}"  # no ISA where the record does not state one


@table("main-job-minutes")
def main_job(store: Store) -> Rendered:
    record = store[MAIN_JOB]
    minutes = record.value("command_seconds") / 60
    return Rendered(f"{minutes:.0f} min on a {machine_words(record)}, {record.data['date'][:10]}", [record.id])


def _passing(store: Store, script: str, environment: str) -> Record | None:
    """The newest passing suite record of ``script`` (.ci/test or .ci/quick) in ``environment``."""
    return max((r for r in store.where("suite") if r.data["command"].startswith(f"bash {script}")
                and r.data["environment"].get("name") == environment and r.value("exit_status") == 0),
               key=lambda r: r.data["date"], default=None)


@table("suite-minutes")
def suite(store: Store) -> Rendered:
    latest = {name: _passing(store, ".ci/test", name) for name in SUITE}
    missing = [name for name, r in latest.items() if r is None]
    if missing:
        raise KeyError(f"no passing suite record of {', '.join(missing)} in the records")
    runs = {name: r for name, r in latest.items() if r is not None}
    parts = [f"`{name}` {r.value('seconds') / 60:.0f} min" for name, r in runs.items()]
    first = runs[SUITE[0]]
    return Rendered(f"{' and '.join(parts)} on a {machine_words(first)}, {first.data['date'][:10]}",
                    [r.id for r in runs.values()])


@table("quick-minutes")
def quick(store: Store) -> Rendered:
    """The quick loop (.ci/quick: lint, then the tests not marked slow, in `all`)."""
    record = _passing(store, ".ci/quick", SUITE[0])
    if record is None:
        raise KeyError("no passing .ci/quick record in the records")
    return Rendered(f"{record.value('seconds') / 60:.0f} min on a {machine_words(record)}, "
                    f"{record.data['date'][:10]}", [record.id])


@table("quickstart-minutes")
def quickstart(store: Store) -> Rendered:
    """The quick start's 10-epoch training at 56x56: the fastest and slowest backend's whole run."""
    from common.tools.tables.training import ACCURACY_56, NAMES

    used = [store[i] for i in ACCURACY_56]
    runs = sorted(used, key=lambda r: r.value("seconds"))
    ends = [f"{r.value('seconds') / 60:.0f} min ({NAMES[r.results('seconds')[0]['labels']['backend']]})"
            for r in (runs[0], runs[-1])]
    machines = sorted({machine_words(r) for r in used})
    dates = sorted({r.data["date"][:10] for r in used})
    return Rendered(f"{ends[0]} to {ends[1]} on {' and '.join(machines)} machines ({', '.join(dates)})",
                    [r.id for r in used])
