"""No test's outcome depends on which CPU runs the suite (users have AVX2 and AVX-512 machines, with and
without bf16 instructions), except through an explicit skip that says why: tests state the CPU they reason
about instead of reading this one's, and never write a CPU's name that could be the one running them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).parent
#: calls that read the running machine's CPU unless given the flags to reason about
READS_CPU = {"cpu_flags", "cpu", "check", "announce", "check_bf16"}
#: a CPU written into a test: "another machine" must be built from the running one instead
CPU_NAME = re.compile(r"family \d+ model \d+|AMD EPYC|Intel\(R\)|\bZen ?\d\b|avx512_bf16.*avx2 fma")
#: the comment that says why a line's outcome is the same on every CPU
NEUTRAL = "# cpu-neutral:"


def _skip_reason(node: ast.AST) -> bool:
    """Whether a decorator is a skip / skipif with a reason."""
    return isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("skip", "skipif") and \
        any(k.arg == "reason" for k in node.keywords)


def cpu_reads(path: Path) -> list[str]:
    """Lines of ``path`` that read the running CPU outside a skip with a reason and without a
    ``# cpu-neutral: why`` comment."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef) or any(_skip_reason(d) for d in fn.decorator_list):
            continue
        for call in ast.walk(fn):
            if not isinstance(call, ast.Call):
                continue
            name = getattr(call.func, "attr", getattr(call.func, "id", ""))
            owner = getattr(getattr(call.func, "value", None), "id", "")
            machine_call = name in ("cpu_flags", "check_bf16") or (name == "cpu" and owner == "machine") or \
                (name in ("check", "announce") and owner == "capability")
            if machine_call and not any(k.arg == "flags" for k in call.keywords) and \
                    NEUTRAL not in lines[call.lineno - 1]:
                found.append(f"{path.name}:{call.lineno} ({fn.name}): {lines[call.lineno - 1].strip()}")
    return found


def test_no_test_reads_the_running_cpu_without_saying_why_its_outcome_is_the_same():
    found = [line for path in sorted(TESTS.glob("test_*.py")) if path != Path(__file__) for line in cpu_reads(path)]
    assert not found, "give these the flags they reason about, skip with a reason, or say why with " \
                      f"'{NEUTRAL} ...': " + "; ".join(found)


def test_no_test_writes_a_cpu_that_could_be_the_one_running_it():
    found = [f"{path.name}:{n}: {line.strip()}" for path in sorted(TESTS.glob("*.py")) if path != Path(__file__)
             for n, line in enumerate(path.read_text().splitlines(), 1) if CPU_NAME.search(line)]
    assert not found, "derive 'another machine' from the running one: " + "; ".join(found)


def test_the_check_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text("import pytest\nfrom common.runtime import capability\n\n"
                      "def test_a():\n    assert capability.check('torch', 'bf16') is None\n\n"
                      "def test_b():\n    assert capability.check('torch', 'bf16', flags={'avx2'})\n\n"
                      "@pytest.mark.skipif(True, reason='needs AVX-512 BF16')\n"
                      "def test_c():\n    assert capability.check('torch', 'bf16') is None\n")
    assert [line.split(" ")[0] for line in cpu_reads(sample)] == ["test_sample.py:5"]
