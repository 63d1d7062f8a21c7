"""``vgg results``: list, show and compare records (the project's and a user's own), render the docs' results
tables from them, and check that every table on a page is what its records render."""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from common.core import atomic
from common.tools import records, tables
from common.tools.records import Record, RecordError

#: the pages whose tables are rendered from records
PAGES = (records.ROOT / "README.md", *sorted((records.ROOT / "docs").glob("*.md")))
#: a rendered region: ``<!-- results: NAME -->`` ... ``<!-- /results -->`` (a block or inline; not in a code span)
MARKER = re.compile(r"(?<!`)<!-- results: (?P<name>[\w.-]+) -->(?P<body>.*?)<!-- /results -->", re.S)
#: a table that holds no measured figure says so on the line before it
NOT_MEASURED = re.compile(r"<!-- not measured: [^>]+ -->")
#: what reads as a measured figure in a table cell: a number with a unit, an accuracy, a tiny difference
FIGURE = re.compile(r"(?<![\w.])(\d+(\.\d+)?\s?(ms|s|ex/s|GFLOP/s|MB|GB|GiB|%)(?![\w/])|0\.9\d\d+|\d(\.\d+)?e-\d+)")
#: where a user's own runs are found by default, beside the project's records
USER_FOLDERS = ("reports", "runs")


def _store(folder: str | None) -> tables.Store:
    return tables.Store(folder or records.STORE)


def render_page(text: str, store: tables.Store) -> tuple[str, list[str]]:
    """``text`` with every marked region re-rendered from ``store``, and the problems met (an unknown table,
    a missing record); a region that cannot be rendered is left as it was."""
    problems: list[str] = []

    def fill(match: re.Match) -> str:
        name, body = match["name"], match["body"]
        if name not in tables.TABLES:
            problems.append(f"table {name!r} is not one vgg results knows ({', '.join(sorted(tables.TABLES))})")
            return match[0]
        try:
            rendered = tables.TABLES[name](store).text
        except (RecordError, KeyError) as exc:
            problems.append(f"table {name!r}: {exc}")
            return match[0]
        inner = f"\n{rendered}\n" if body.startswith("\n") else rendered
        return f"<!-- results: {name} -->{inner}<!-- /results -->"

    return MARKER.sub(fill, text), problems


def unrecorded_figures(text: str) -> list[str]:
    """Table rows outside the rendered regions that hold what reads as a measured figure, unless the table is
    marked ``<!-- not measured: why -->``."""
    found = []
    outside = MARKER.sub(lambda m: "\n" * m[0].count("\n"), text)
    skipping, in_table = False, False
    for number, line in enumerate(outside.splitlines(), 1):
        if NOT_MEASURED.search(line):
            skipping = True
            continue
        if not line.startswith("|"):
            skipping = skipping and not in_table
            in_table = False
            continue
        in_table = True
        if skipping or line.startswith("|---"):
            continue
        hit = FIGURE.search(re.sub(r"`[^`]*`", "", line))
        if hit:
            found.append(f"line {number}: {hit[0]!r} in a table row outside a rendered region")
    return found


def render(pages=PAGES, store: tables.Store | None = None, write: bool = True) -> tuple[list[Path], list[str]]:
    """Re-render every marked region of ``pages``: the pages that changed (written if ``write``) and the
    problems met."""
    store = store or _store(None)
    changed, problems = [], []
    for page in map(Path, pages):
        text = page.read_text()
        new, found = render_page(text, store)
        problems += [f"{page.relative_to(records.ROOT) if page.is_relative_to(records.ROOT) else page}: {p}"
                     for p in found]
        if new != text:
            changed.append(page)
            if write:
                atomic.write_text(page, new)
    return changed, problems


def check(pages=PAGES, store: tables.Store | None = None) -> list[str]:
    """Every reason the pages cannot be trusted: a record without provenance, a region that differs from
    what its records render or cannot be rendered, a figure in a table outside any rendered region."""
    store = store or _store(None)
    problems = [f"{r.path.name}: {p}" for r in store for p in records.validate(r.data)]
    for page in map(Path, pages):
        name = page.relative_to(records.ROOT) if page.is_relative_to(records.ROOT) else page
        text = page.read_text()
        new, found = render_page(text, store)
        problems += [f"{name}: {p}" for p in found]
        for a, b in zip(MARKER.finditer(text), MARKER.finditer(new)):
            if a[0] != b[0]:
                problems.append(f"{name}: table {a['name']!r} differs from what its records render "
                                f"(changed by hand? run vgg results render)")
        problems += [f"{name}: {p}" for p in unrecorded_figures(text)]
    return problems


# -- list, show, compare ---------------------------------------------------------------------------------

def _sources(paths: list[str]) -> list[Path]:
    if paths:
        return [Path(p) for p in paths]
    return [records.STORE, *(Path(f) for f in USER_FOLDERS if Path(f).is_dir())]


def _matches(record: Record, args: argparse.Namespace) -> bool:
    d = record.data
    m = d["machine"]
    if args.kind and d["kind"] != args.kind:
        return False
    if args.machine and args.machine.lower() not in f"{m.get('class')} {m.get('cpu')}".lower():
        return False
    if args.date and not d["date"].startswith(args.date):
        return False
    if args.backend and not record.results(backend=args.backend):
        return False
    return not (args.metric and not record.results(args.metric))


def resolve(run: str, paths: list[str]) -> Record:
    """A record by path (a record file, or a folder holding one), id or unique id prefix among the records
    under ``paths``."""
    if Path(run).is_file():
        return records.read(run)
    if Path(run).is_dir():
        found = records.find([run])
        if len(found) != 1:
            raise RecordError(f"{run} holds {len(found)} records; name one of its files")
        return found[0]
    known = records.find(_sources(paths))
    found = [r for r in known if r.id == run] or [r for r in known if r.id.startswith(run)]
    if len({r.id for r in found}) == 1:  # one run, published and in a reports/ folder: the first source's copy
        found = found[:1]
    if len(found) != 1:
        where = ", ".join(str(p) for p in _sources(paths))
        raise RecordError(f"{run!r} names {'no' if not found else len(found)} records in {where}; "
                          "give a record's path, id or a unique id prefix (vgg results list)")
    return found[0]


#: reports written before records existed, by file name: the function that makes their record
def _converters() -> dict:
    from common.tools import compare_report, race_report
    return {"compare.json": compare_report.record, "race.json": race_report.record}


def importable(path: Path) -> list[dict]:
    """The records under ``path``: records as they are, and older ``vgg compare`` / ``vgg race`` reports
    converted (their commit is the one they state, if any)."""
    held = records.find([path])
    found = [r.data for r in held]
    recorded = {r.path.parent for r in held}  # a report beside its own record is that record's run
    converters = _converters()
    files = [path] if path.is_file() else sorted(path.rglob("*.json")) if path.is_dir() else []
    for file in files:
        if file.name in converters and file.parent not in recorded:
            found.append(converters[file.name](json.loads(file.read_text()), str(file)))
    if not found:
        raise RecordError(f"{path}: no record and no compare.json or race.json report in it")
    return found


def _import(args: argparse.Namespace) -> int:
    store = Path(args.store or records.STORE)
    held = {json.dumps(r.data, sort_keys=True) for r in records.find([store])} if store.is_dir() else set()
    for path in map(Path, args.paths):
        for record in importable(path):
            if args.commit and not record.get("commit"):
                record["commit"] = args.commit
                record.setdefault("source", {})["commit_note"] = "stated by vgg results import --commit"
            problems = records.validate(record)
            if problems:
                raise RecordError(f"{path}: record {record.get('id')} cannot be published: {'; '.join(problems)}"
                                  + (" (--commit names the commit it measured)" if not record.get("commit") else ""))
            if json.dumps(record, sort_keys=True) in held:
                print(f"vgg results: {record['id']} is already in {store}")
                continue
            print(f"vgg results: imported {records.write(record, store)}")
    return 0


def _labels(result: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in result["labels"].items())


def _value(result: dict) -> str:
    spread = result.get("spread")
    value = result["value"]
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    if spread and spread.get("low") is not None:
        text += f" ({spread['low']:.4g}-{spread['high']:.4g}{', n=' + str(spread['n']) if spread.get('n') else ''})"
    return f"{text} {result['unit']}"


def _list(args: argparse.Namespace) -> int:
    shown = [r for r in records.find(_sources(args.paths)) if _matches(r, args)]
    for r in shown:
        d = r.data
        print(f"{r.id}  {d['kind']:<10} {d['date'][:10]}  {d['machine'].get('class', '?'):<13} "
              f"{(d.get('commit') or '?')[:8]}{'+' if d.get('dirty') else ' '} {len(d['results']):>4} results  "
              f"{d['command'][:70]}")
    print(f"{len(shown)} records")
    return 0


def _show(args: argparse.Namespace) -> int:
    r = resolve(args.record, args.paths)
    d = r.data
    m, env = d["machine"], d["environment"]
    print(f"record   {r.id} ({r.path})\nkind     {d['kind']}\ncommand  {d['command']}\ndate     {d['date']}\n"
          f"commit   {d.get('commit')}{' (dirty tree)' if d.get('dirty') else ''}\n"
          f"machine  {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib') or '?'} GiB"
          f"{', ' + m['gpu']['name'] if m.get('gpu') else ''}\n"
          f"environment  {', '.join(f'{k} {v}' for k, v in env.items() if v)}")
    if d.get("source"):
        print(f"source   {json.dumps(d['source'])}")
    for result in r.results():
        if args.metric and result["metric"] != args.metric:
            continue
        print(f"  {result['metric']:<22} {_labels(result):<45} {_value(result)}")
    return 0


def distinguishable(a: dict, b: dict) -> str | None:
    """Whether two results of one cell differ beyond their spread: None when either has a single sample (no
    spread to judge by); else 'not distinguishable' when their ranges (lowest to highest round) overlap,
    'distinguishable' when they do not (the rule ``vgg compare`` uses for its ties)."""
    sa, sb = a.get("spread"), b.get("spread")
    if not sa or not sb or sa.get("low") is None or sb.get("low") is None:
        return None
    if sa.get("n", 2) < 2 or sb.get("n", 2) < 2:
        return None
    overlap = sa["low"] <= sb["high"] and sb["low"] <= sa["high"]
    return "not distinguishable" if overlap else "distinguishable"


def comparison(a: Record, b: Record, any_machine: bool = False) -> list[dict]:
    """Every cell both records measured: its metric, labels, both values, B/A and the verdict."""
    ma, mb = a.data["machine"], b.data["machine"]
    if not any_machine and (ma.get("cpu"), ma.get("cores")) != (mb.get("cpu"), mb.get("cores")):
        raise RecordError(f"{a.id} ran on {ma.get('cpu')} ({ma.get('cores')} cores) and {b.id} on {mb.get('cpu')} "
                          f"({mb.get('cores')} cores): figures from different machines are not compared "
                          "(--any-machine compares them anyway)")
    index = {(r["metric"], json.dumps(r["labels"], sort_keys=True)): r for r in b.results()}
    rows = []
    for ra in a.results():
        rb = index.get((ra["metric"], json.dumps(ra["labels"], sort_keys=True)))
        if rb is None or not isinstance(ra["value"], (int, float)) or not isinstance(rb["value"], (int, float)):
            continue
        ratio = rb["value"] / ra["value"] if ra["value"] else None
        verdict = distinguishable(ra, rb) or "one sample each: cannot tell"
        rows.append({"metric": ra["metric"], "labels": ra["labels"], "a": ra, "b": rb, "ratio": ratio,
                     "verdict": verdict})
    return rows


def _compare(args: argparse.Namespace) -> int:
    a, b = resolve(args.a, args.paths), resolve(args.b, args.paths)
    rows = [r for r in comparison(a, b, args.any_machine) if not args.metric or r["metric"] == args.metric]
    if not rows:
        raise RecordError(f"{a.id} and {b.id} share no measured cell")
    print(f"A = {a.id}\nB = {b.id}\nB/A per cell; two results are distinguishable when the ranges of their "
          "rounds do not overlap")
    for row in rows:
        ratio = f"{row['ratio']:.3f}" if row["ratio"] is not None else "—"
        print(f"  {row['metric']:<22} {_labels(row['a']):<40} {_value(row['a']):>28} {_value(row['b']):>28}  "
              f"x{ratio}  {row['verdict']}")
    return 0


def _render(args: argparse.Namespace) -> int:
    changed, problems = render(store=_store(args.store))
    for page in changed:
        print(f"vgg results: rendered {page.relative_to(records.ROOT)}")
    for problem in problems:
        print(f"vgg results: {problem}")
    return 2 if problems else 0


def _check(args: argparse.Namespace) -> int:
    problems = check(store=_store(args.store))
    for problem in problems:
        print(f"vgg results check: {problem}")
    verdict = f"FAILED, {len(problems)} problems" if problems else "every table is what its records render"
    print(f"vgg results check: {verdict}")
    return 1 if problems else 0


def _environment(args: argparse.Namespace) -> int:
    """Write a record of this interpreter's environment (kind environment): one version per package."""
    env = records.environment()
    found = [records.result("version", "", v, package=k) for k, v in env.items() if k != "name" and v]
    out = args.out or time.strftime("reports/environment-%Y%m%d-%H%M%S")
    print(f"vgg results: wrote {records.write(records.make('environment', found, name=env['name']), out)}")
    return 0


def add_parser(sub, parent: type[argparse.ArgumentParser]) -> None:
    """``vgg results`` and its verbs, under the ``vgg`` parser's sub-commands."""
    p = sub.add_parser("results", help="list, show and compare measured records; render and check the docs' tables",
                       description=__doc__.splitlines()[0])
    verbs = p.add_subparsers(dest="verb", required=True, parser_class=parent)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--paths", nargs="*", default=[], metavar="PATH",
                       help=f"record files or folders (default: {records.STORE.relative_to(records.ROOT)} and "
                            f"./{' and ./'.join(USER_FOLDERS)})")
    ls = verbs.add_parser("list", parents=[where], help="the records, oldest first")
    ls.add_argument("--backend")
    ls.add_argument("--metric")
    ls.add_argument("--kind", help="compare, race, train, parity, book-reference, ...")
    ls.add_argument("--machine", help="part of the CPU's name or class (zen3, zen4, intel-f6m207, ...)")
    ls.add_argument("--date", help="a date prefix: 2026-12 or 2026-12-05")
    ls.set_defaults(run=_list)
    sh = verbs.add_parser("show", parents=[where], help="one record's provenance and results")
    sh.add_argument("record", help="a record's path, id or unique id prefix")
    sh.add_argument("--metric")
    sh.set_defaults(run=_show)
    cp = verbs.add_parser("compare", parents=[where], help="B/A per cell and whether the two are distinguishable")
    cp.add_argument("a")
    cp.add_argument("b")
    cp.add_argument("--metric")
    cp.add_argument("--any-machine", action="store_true", help="compare records from different machines too")
    cp.set_defaults(run=_compare)
    im = verbs.add_parser("import", help="publish records (and older compare.json / race.json reports) into the "
                          f"project's records ({records.STORE.relative_to(records.ROOT)})")
    im.add_argument("paths", nargs="+", metavar="PATH", help="record files, report folders or files")
    im.add_argument("--commit", help="the commit a report measured, where it did not record one")
    im.add_argument("--store", default=None, help=argparse.SUPPRESS)
    im.set_defaults(run=_import)
    en = verbs.add_parser("environment", help="write a record of this interpreter's package versions")
    en.add_argument("--out", default=None, help="the record's folder (default reports/environment-<time>)")
    en.set_defaults(run=_environment)
    for verb, run, text in (("render", _render, "rewrite every marked table in README.md and docs/"),
                            ("check", _check, "fail where a page's table is not what its records render")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("--store", default=None, help=argparse.SUPPRESS)
        v.set_defaults(run=run)
