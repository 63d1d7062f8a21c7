"""Results as records: one JSON file per run holding what was measured (metric, unit, value, spread) and the
provenance a reader needs to trust it (command, commit, date, machine, environment), written once, never
overwritten, so that every figure in the docs can be traced to the run that measured it."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from common.core import backends
from common.runtime.machine import cores, cpu, cpu_flags
from common.tools.spreads import figure

#: the record format; a reader refuses any other
SCHEMA = "vgg-record/1"
#: the project's folder
ROOT = Path(__file__).resolve().parents[2]
#: where the project's published records live
STORE = ROOT / "benchmarks" / "records"
#: vector extensions that change these figures, in the order a reader scans them
ISA = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
#: packages besides the frameworks whose versions change a figure
PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxscript", "tf2onnx", "jax2onnx", "safetensors")
#: provenance every record must hold: (path, what it is)
REQUIRED = ((("command",), "command line"), (("date",), "date"), (("commit",), "commit"),
            (("machine", "cpu"), "CPU"), (("machine", "cores"), "core count"),
            (("environment", "python"), "Python version"))
#: the environments `.ci/setup` builds, by their folder
ENVIRONMENTS = {".venv": "all", ".venv-modern": "modern"}
#: AMD family 25 models by core generation; the name says which CPU class a figure belongs to
_ZEN = {(25, 1): "zen3", (25, 33): "zen3", (25, 17): "zen4", (25, 97): "zen4", (26, 2): "zen5"}


class RecordError(ValueError):
    """A record that is malformed, lacks provenance or cannot be found."""


def _cpuinfo() -> dict[str, str]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def machine_class(vendor: str | None, family: int | None, model: int | None) -> str:
    """A short name for a CPU class, used in record names: ``zen3``, ``zen4``, else vendor-family-model."""
    if family is not None and model is not None and (family, model) in _ZEN and vendor in (None, "AuthenticAMD"):
        return _ZEN[family, model]
    short = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(vendor or "", (vendor or "cpu").lower())
    return f"{short}-f{family}m{model}" if family is not None else short


def _gpu() -> dict | None:
    """The first NVIDIA GPU's name, memory and driver, where nvidia-smi answers; else None."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = [part.strip() for part in out.splitlines()[0].split(",")] if out.strip() else []
    return dict(zip(("name", "memory", "driver"), first)) if len(first) == 3 else None


def machine() -> dict:
    """The machine a measurement runs on: CPU (vendor, family, model, name, class, the ISA flags that matter
    here), cores, memory and the GPU where there is one."""
    info = _cpuinfo()
    family = int(info["cpu family"]) if info.get("cpu family", "").isdigit() else None
    model = int(info["model"]) if info.get("model", "").isdigit() else None
    vendor = info.get("vendor_id")
    flags = cpu_flags()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory = None
    return {"cpu": cpu(), "vendor": vendor, "family": family, "model": model, "model_name": info.get("model name"),
            "class": machine_class(vendor, family, model), "isa": [f for f in ISA if f in flags], "cores": cores(),
            "memory_gib": round(memory, 1) if memory else None, "gpu": _gpu(), "platform": platform.platform()}


def environment() -> dict:
    """This interpreter's Python, NumPy and every framework and export package installed, read from their
    metadata without importing them (None where absent), and the environment's name where `.ci/setup` made it."""
    dists = dict.fromkeys(d for b in backends.BACKENDS.values() for d in b.distributions)
    versions = {d: backends.distribution_version(d) for d in (*PACKAGES, *dists)}
    prefix = Path(sys.prefix).name
    name = ENVIRONMENTS.get(prefix)
    return {"name": name, "python": platform.python_version(), **versions}


def commit(root: Path = ROOT) -> tuple[str | None, bool | None]:
    """The checkout's commit and whether its tracked files differ from it; (None, None) outside git."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=20, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head, bool(status.strip())


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it again: ``vgg ...`` for the CLI, ``python path ...`` for a script."""
    argv = list(sys.argv if argv is None else argv)
    head = Path(argv[0]).name if argv else "python"
    if head in ("vgg", "__main__.py", "cli.py"):
        return shlex.join(["vgg", *argv[1:]])
    return shlex.join(["python", os.path.relpath(argv[0], ROOT) if argv[0].endswith(".py") else argv[0], *argv[1:]])


def now() -> str:
    """The current time in UTC, to the second, as every record states it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def result(metric: str, unit: str, value: float | int | None, *, samples: Iterable[float] | None = None,
           low: float | None = None, high: float | None = None, **labels) -> dict:
    """One measured figure: what (``metric``, ``unit``), its ``value`` (a median where there are rounds or
    seeds), its spread (``samples``, else ``low``/``high``) and the cell it belongs to (backend, size, ...)."""
    entry: dict = {"metric": metric, "unit": unit, "value": value,
                   "labels": {k: v for k, v in labels.items() if v is not None}}
    values = [float(s) for s in samples] if samples is not None else []
    if values:
        entry["spread"] = {"low": min(values), "high": max(values), "n": len(values), "samples": values}
    elif low is not None and high is not None:
        entry["spread"] = {"low": low, "high": high}
    return entry


def make(kind: str, results: list[dict], *, command: str | None = None, name: str | None = None,
         date: str | None = None, machine_info: dict | None = None, environment_info: dict | None = None,
         commit_info: tuple[str | None, bool | None] | None = None, report: str | None = None,
         details: dict | None = None, source: dict | None = None) -> dict:
    """A record of one run of ``kind`` (compare, race, train, ...), with this process's provenance unless
    given (a converted record passes what its report stated, and ``source`` says where it came from)."""
    date = date or now()
    machine_info = machine_info or machine()
    head, dirty = commit_info if commit_info is not None else commit()
    stamp = re.sub(r"[^0-9T]", "", date[:19])
    slug = "-".join(part for part in (stamp, kind, name, machine_info.get("class")) if part)
    record = {"schema": SCHEMA, "id": slug, "kind": kind, "command": command or command_line(), "date": date,
              "commit": head, "dirty": dirty, "machine": machine_info,
              "environment": environment_info or environment(), "results": results}
    if report:
        record["report"] = report
    if details:
        record["details"] = details
    if source:
        record["source"] = source
    return record


def write(record: dict, folder: str | os.PathLike = STORE) -> Path:
    """Write ``record`` as ``folder/<id>.json``, never over another run's record: a name already taken gets
    ``-2``, ``-3``, ... (the file is linked into place whole, so a reader never sees half of it). A run outside a
    git checkout is written without a commit; ``vgg results check`` refuses such a record among the project's."""
    problems = validate(record, need_commit=False)
    if problems:
        raise RecordError(f"record {record.get('id')!r} is incomplete: {'; '.join(problems)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = record["id"]
    for n in range(1, 1000):
        record["id"] = base if n == 1 else f"{base}-{n}"
        path = folder / f"{record['id']}.json"
        if path.exists():
            continue
        tmp = folder / f".{record['id']}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        try:
            os.link(tmp, path)
            return path
        except FileExistsError:
            continue
        finally:
            tmp.unlink(missing_ok=True)
    raise RecordError(f"no free name for record {base!r} in {folder}")


def validate(record: dict, need_commit: bool = True) -> list[str]:
    """What ``record`` lacks: a schema, results with metric, unit and value, or provenance (``REQUIRED``; the
    commit only if ``need_commit``)."""
    if not isinstance(record, dict):
        return ["not a JSON object"]
    problems = []
    if record.get("schema") != SCHEMA:
        problems.append(f"schema is {record.get('schema')!r}, expected {SCHEMA!r}")
    for path, what in REQUIRED:
        if path == ("commit",) and not need_commit:
            continue
        if figure(record, path) in (None, "", "unknown"):
            problems.append(f"no {what} ({'.'.join(path)})")
    results = record.get("results")
    if not isinstance(results, list) or not results:
        problems.append("no results")
    else:
        for i, r in enumerate(results):
            if not isinstance(r, dict) or not {"metric", "unit", "value"} <= r.keys():
                problems.append(f"result {i} lacks metric, unit or value")
    return problems


@dataclass(frozen=True)
class Record:
    """A record read from ``path``."""

    path: Path
    data: dict

    @property
    def id(self) -> str:
        return self.data["id"]

    def results(self, metric: str | None = None, **labels) -> list[dict]:
        """The results of ``metric`` (any if None) whose labels include ``labels``."""
        return [r for r in self.data["results"] if (metric is None or r["metric"] == metric)
                and all(r["labels"].get(k) == v for k, v in labels.items())]

    def value(self, metric: str, **labels):
        """The one value of ``metric`` for ``labels``; RecordError if there is none or several."""
        found = self.results(metric, **labels)
        if len(found) != 1:
            raise RecordError(f"record {self.id} has {len(found)} results of {metric} for {labels}, expected one")
        return found[0]["value"]

    def one(self, metric: str, **labels) -> dict:
        """The one result of ``metric`` for ``labels`` (value, spread, labels)."""
        found = self.results(metric, **labels)
        if len(found) != 1:
            raise RecordError(f"record {self.id} has {len(found)} results of {metric} for {labels}, expected one")
        return found[0]


def read(path: str | os.PathLike) -> Record:
    """The record in ``path``; RecordError naming the file if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: not a readable record ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise RecordError(f"{path}: not a {SCHEMA} record")
    if "id" not in data or not isinstance(data.get("results"), list):
        raise RecordError(f"{path}: a {SCHEMA} record needs an id and results")
    return Record(path, data)


def find(paths: Iterable[str | os.PathLike]) -> list[Record]:
    """Every record under ``paths`` (files, or folders searched recursively for JSON files holding one),
    oldest first; files that are not records are passed over."""
    found: dict[Path, Record] = {}
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(path.rglob("*.json")) if path.is_dir() else []
        for file in files:
            try:
                if SCHEMA not in file.read_text(errors="replace")[:200]:
                    continue
                found[file.resolve()] = read(file)
            except (OSError, RecordError):
                if path.is_file():
                    raise
    return sorted(found.values(), key=lambda r: (r.data.get("date", ""), r.id))


def machine_from_text(cpu_text: str, cores_count: int, **known) -> dict:
    """A machine as an older report stated it (``cpu()``'s text: name, maybe family and model, ISA flags),
    for records converted from such reports; what the text does not say stays None."""
    found = re.search(r"\(family (\d+) model (\d+)\)", cpu_text)
    family, model = (int(found[1]), int(found[2])) if found else (None, None)
    isa = [f for f in ISA if re.search(rf"\b{f}\b", cpu_text)]
    vendor = "AuthenticAMD" if "AMD" in cpu_text else "GenuineIntel" if "Intel" in cpu_text else None
    if family is None and vendor == "AuthenticAMD" and "avx2" in isa:
        family = 25  # the project's AMD EPYC machines are all family 25: Zen 3 without AVX-512, Zen 4 with
        model = 17 if "avx512f" in isa else 1
    return {"cpu": cpu_text, "vendor": vendor, "family": family, "model": model,
            "model_name": cpu_text.split(" (")[0].split(",")[0], "class": machine_class(vendor, family, model),
            "isa": isa, "cores": cores_count, "memory_gib": None, "gpu": None, "platform": None, **known}


def file_commit(path: str | os.PathLike) -> str | None:
    """The commit that last wrote ``path`` in this repository: the closest provenance an older result file
    has when its run did not record its own commit."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%H", "--", str(path)],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None
