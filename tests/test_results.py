"""Figures as records: every table on a page is what its records render, a hand-edited figure or a missing
record fails `vgg results check`, and a record is written once, never over another run's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from common.tools import records, results, tables
from helpers import ROOT


def vgg_results(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common.tools.cli", "results", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def store() -> tables.Store:
    return tables.Store()


def rendered_page(tmp_path, name: str):
    """A copy of the first page that shows table ``name``, and the record ids it reads."""
    for page in results.PAGES:
        text = page.read_text()
        if f"<!-- results: {name} -->" in text:
            copy = tmp_path / page.name
            copy.write_text(text)
            return copy
    raise AssertionError(f"no page shows table {name}")


@pytest.mark.slow
def test_every_page_is_what_its_records_render():
    """The suite's own `vgg results check`: the committed pages and records agree, all with provenance."""
    proc = vgg_results("check")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "every table is what its records render" in proc.stdout


def test_every_record_names_its_machine_environment_commit_and_date(store):
    assert len(list(store)) > 20
    for record in store:
        assert records.validate(record.data) == [], record.id
        m = record.data["machine"]
        assert m["cpu"] and m["cores"] and record.data["date"][:4] == "2026" and len(record.data["commit"]) >= 7


def test_a_figure_changed_by_hand_fails_the_check(tmp_path, store):
    page = rendered_page(tmp_path, "compare-zen3")
    assert results.check([page], store) == []
    text = page.read_text()
    start = text.index("<!-- results: compare-zen3 -->")
    row = text.index("| torch |", start)
    cell = text.index("|", row + 2) + 2  # the first figure of torch's row
    digit = next(i for i in range(cell, cell + 12) if text[i].isdigit())
    page.write_text(text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:])
    problems = results.check([page], store)
    assert any("'compare-zen3' differs from what its records render" in p for p in problems), problems


def test_a_removed_record_fails_the_check_and_render_keeps_the_table(tmp_path):
    folder = tmp_path / "records"
    shutil.copytree(records.STORE, folder)
    page = rendered_page(tmp_path, "compare-zen3")
    used = tables.TABLES["compare-zen3"](tables.Store(folder)).used
    (folder / f"{used[0]}.json").unlink()
    fewer = tables.Store(folder)
    problems = results.check([page], fewer)
    assert any("compare-zen3" in p and used[0] in p for p in problems), problems
    before = page.read_text()
    changed, render_problems = results.render([page], fewer)
    assert changed == [] and render_problems and page.read_text() == before  # nothing rendered from nothing


def test_a_record_without_provenance_fails_the_check(tmp_path):
    folder = tmp_path / "records"
    shutil.copytree(records.STORE, folder)
    victim = sorted(folder.glob("*.json"))[0]
    data = json.loads(victim.read_text())
    data["commit"] = None
    del data["machine"]["cores"]
    victim.write_text(json.dumps(data))
    problems = results.check([], tables.Store(folder))
    assert any(victim.name in p and "no commit" in p for p in problems), problems
    assert any(victim.name in p and "no core count" in p for p in problems), problems


def test_a_figure_in_a_table_outside_a_rendered_region_fails(tmp_path, store):
    page = tmp_path / "page.md"
    page.write_text("| backend | train ex/s |\n|---|---|\n| torch | 412.5 ex/s |\n\n"
                    "<!-- not measured: a limit -->\n| limit | value |\n|---|---|\n| memory | 8 GiB |\n")
    problems = results.check([page], store)
    assert len(problems) == 1 and "'412.5 ex/s'" in problems[0] and "line 3" in problems[0], problems


def test_a_record_is_written_once_and_never_over_another(tmp_path):
    result = records.result("train_ex_s", "ex/s", 100.0, samples=[99.0, 100.0, 101.0], backend="torch")
    record = records.make("compare", [result], command="vgg compare --seconds 1", date="2026-12-07T00:00:00+00:00")
    first = records.write(dict(record), tmp_path)
    before = first.read_bytes()
    second = records.write(dict(record), tmp_path)
    assert first != second and first.read_bytes() == before
    assert records.read(second).id == second.stem == f"{record['id']}-2"
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (("show", "no-such-record"), "names no records"),
    (("compare", "no-such-record", "neither"), "names no records"),
    (("list", "--paths", "/nonexistent-folder", "--kind", "compare"), None),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    proc = vgg_results(*args)
    if message is None:
        assert proc.returncode == 0 and proc.stdout.strip() == "0 records", proc.stdout + proc.stderr
        return
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_list_filters_and_show_states_provenance(store):
    proc = vgg_results("list", "--kind", "compare", "--machine", "zen4", "--backend", "torch")
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines()[:-1]]
    assert listed and all(store[i].data["machine"]["class"] == "zen4" for i in listed)
    shown = vgg_results("show", listed[0], "--metric", "train_ex_s")
    assert shown.returncode == 0, shown.stderr
    assert "commit" in shown.stdout and store[listed[0]].data["machine"]["cpu"] in shown.stdout
    assert "train_ex_s" in shown.stdout


def test_compare_says_whether_rounds_overlap_and_refuses_other_machines(store):
    zen3, zen4 = store["20261205T084046-compare-zen3"], store["20261206T191340-compare-zen4"]
    rows = results.comparison(zen4, zen4)
    assert rows and all(r["ratio"] == 1 and r["verdict"] == "not distinguishable" for r in rows if r["a"].get("spread"))
    with pytest.raises(records.RecordError, match="different machines"):
        results.comparison(zen3, zen4)
    assert results.comparison(zen3, zen4, any_machine=True)
    a = {"spread": {"low": 1.0, "high": 2.0, "n": 3}}
    assert results.distinguishable(a, {"spread": {"low": 2.5, "high": 3.0, "n": 3}}) == "distinguishable"
    assert results.distinguishable(a, {"spread": {"low": 1.9, "high": 3.0, "n": 3}}) == "not distinguishable"
    assert results.distinguishable(a, {"value": 2.0}) is None


@pytest.mark.slow
def test_an_older_report_is_imported_as_a_record_with_its_commit(tmp_path):
    report = records.ROOT / "benchmarks" / "results" / "compare-zen3"
    store = tmp_path / "store"
    missing = vgg_results("import", str(tmp_path / "nothing-here"), "--store", str(store))
    assert missing.returncode == 2 and "no record" in missing.stderr
    proc = vgg_results("import", str(report), "--store", str(store))
    assert proc.returncode == 0, proc.stderr
    (path,) = store.glob("*.json")
    assert records.validate(json.loads(path.read_text())) == []
    again = vgg_results("import", str(report), "--store", str(store))
    assert again.returncode == 0 and "already in" in again.stdout and len(list(store.glob("*.json"))) == 1
