"""README.md and docs/*.md: every relative link resolves, and every `vgg` command shown parses.

1. Links: every relative Markdown link ``[text](path)`` or ``[text](path#anchor)`` outside code points at an
   existing file, relative to the page; an anchor into a Markdown page must name one of its headings (GitHub's
   slugs). http(s) and mailto links are not checked.
2. Commands: every ``vgg ...`` line in a fenced shell block (```sh, ```bash, ```shell, ```console or a bare
   ```) parses with the CLI's own parser. Usage synopses with placeholders (``[--arch small]``,
   ``{torch,tf}``, ``FILE...``) are written in ```text blocks, which this test does not read: nothing in a
   shell block is skipped by pattern. Continuation lines (``\\`` at the end) are joined, ``$ `` prompts and
   ``# ...`` comments dropped, leading ``VAR=value`` assignments skipped, and ``;``, ``&&``, ``|``, ``&``
   separate commands; ``python -m common.tools.cli ...`` (also under ``torchrun``) counts as ``vgg``.

Needs no framework: the CLI's parser imports only the standard library and ``common`` (frameworks load when a
sub-command runs).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from common.tools import cli
from helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "sh", "bash", "shell", "console"}
CLI_MODULES = {"common.tools.cli"}

_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _split(text: str) -> tuple[list[tuple[int, str]], list[tuple[str, int, list[str]]]]:
    """(prose lines with their numbers, fenced blocks as (info, first line number, lines))."""
    prose, blocks = [], []
    fence, block = None, None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence, block = match.group(1), (match.group(2).lower(), number + 1, [])
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            blocks.append(block)
            fence, block = None, None
        elif fence is not None:
            block[2].append(line)
        else:
            prose.append((number, line))
    return prose, blocks


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    prose, _ = _split(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in prose:
        if match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            slug = _slug(match.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in the page's prose, code spans removed first."""
    prose, _ = _split(page.read_text(encoding="utf-8"))
    numbers = [n for n, _ in prose]
    text = "\n".join(line for _, line in prose)
    text = _CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)  # keeps line numbers
    found = []
    for match in _LINK.finditer(text):
        found.append((numbers[text.count("\n", 0, match.start())], match.group(1)))
    return found


def _commands(page: Path) -> list[tuple[int, str, list[str]]]:
    """(line number, the command as shown, its arguments after `vgg`) for every vgg command in a shell block."""
    _, blocks = _split(page.read_text(encoding="utf-8"))
    commands = []
    for info, first, lines in blocks:
        if info not in SHELL_BLOCKS:
            continue
        logical, start = "", None
        for number, line in enumerate(lines, first):
            start = number if start is None else start
            if line.rstrip().endswith("\\"):
                logical += line.rstrip()[:-1] + " "
                continue
            logical += line
            text, logical, at = logical.strip(), "", start
            start = None
            if text.startswith("$ "):
                text = text[2:]
            lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
            segments, current = [], []
            for token in tokens:
                if token and all(c in ";&|()<>" for c in token):
                    segments.append(current)
                    current = []
                else:
                    current.append(token)
            segments.append(current)
            for segment in segments:
                while segment and _ASSIGNMENT.match(segment[0]):
                    segment = segment[1:]
                if not segment:
                    continue
                if segment[0] == "vgg" or segment[0].endswith("/vgg"):
                    commands.append((at, text, segment[1:]))
                elif "-m" in segment and segment.index("-m") + 1 < len(segment) and \
                        segment[segment.index("-m") + 1] in CLI_MODULES:
                    commands.append((at, text, segment[segment.index("-m") + 2:]))
    return commands


def _ids(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_pages_exist() -> None:
    assert (ROOT / "README.md").is_file()
    assert len(PAGES) > 1, "no docs/*.md pages"


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for number, target in _links(page):
        if re.match(r"^(https?:|mailto:)", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file():
            broken.append(f"{_ids(page)}:{number}: {target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{_ids(page)}:{number}: {target} (no heading #{anchor} in {file.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_vgg_commands_parse(page: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # paths in commands (--python .venv/bin/python) are the repository's
    failures = []
    for number, shown, argv in _commands(page):
        try:
            cli.parser().parse_args(argv)
        except SystemExit as exc:
            error = capsys.readouterr().err.strip().splitlines()
            failures.append(f"{_ids(page)}:{number}: {shown}\n    exit {exc.code}: {error[-1] if error else ''}")
    assert not failures, "commands the vgg parser refuses:\n" + "\n".join(failures)


def test_commands_are_found() -> None:
    """The extraction itself: continuations, `VAR=value` prefixes and `python -m` (under `ip netns exec` too) are
    seen."""
    argvs = [argv for page in PAGES for _, _, argv in _commands(page)]
    assert any(argv[:1] == ["train"] for argv in argvs)
    on_nodes = {argv[argv.index("--backend") + 1] for argv in argvs if "--nodes" in argv and "--backend" in argv}
    assert {"torch", "jax"} <= on_nodes, on_nodes  # docs/distributed.md: a user's line, and a test's under ip netns
