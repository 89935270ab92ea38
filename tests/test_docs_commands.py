"""issue 24 item 4: what the docs tell an operator to type works as printed. Every `r1deploy …` line
in a code block of README.md, docs/*.md and the README `r1deploy init` writes is accepted by the real
command-line parser (placeholders such as GATEWAY are values; `[--opt X]` is an optional part), and
every subcommand has its row in docs/commands.md."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from r1deploy.cli import build_parser
from r1deploy.commands.init import README as INIT_README

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def shown_commands(block: str) -> list[str]:
    """The `r1deploy` invocations of a shell block: continuations joined, comments and other
    commands of an `&&` chain dropped, an environment prefix (`VAR=value r1deploy …`) skipped."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in re.split(r"\s&&\s", re.split(r"\s#\s", " " + line, maxsplit=1)[0]):
            words = shlex.split(part.replace("[", " ").replace("]", " "))
            while words and ASSIGNMENT.match(words[0]):
                words.pop(0)
            if words[:1] == ["r1deploy"]:
                found.append(shlex.join(words[1:]))
    return found


def _documented() -> list[tuple[str, str]]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    shown = [(p.name, c) for p in pages for b in FENCE.findall(p.read_text()) for c in shown_commands(b)]
    indented = "\n".join(ln[4:] for ln in INIT_README.splitlines() if ln.startswith("    "))
    return shown + [("init README", c) for c in shown_commands(indented)]


def test_shell_lines_are_read_as_typed():
    block = ("X=1 r1deploy smoke https://G:8080 --model M \\\n    --api-key-file k   # a comment\n"
             "pip install r1deploy\nr1deploy init d && cd d\nr1deploy drift reports/ [--json]\n")
    assert shown_commands(block) == ["smoke https://G:8080 --model M --api-key-file k", "init d",
                                     "drift reports/ --json"]


def test_the_docs_show_commands():
    names = {page for page, _ in _documented()}
    assert {"README.md", "init README", "drift.md", "monitoring.md"} <= names


@pytest.mark.parametrize("page,command", _documented())
def test_every_documented_command_parses(page, command):
    try:
        build_parser().parse_args(shlex.split(command))
    except SystemExit as exc:
        pytest.fail(f"{page}: `r1deploy {command}` is refused by the parser (exit {exc.code})")


def test_every_subcommand_has_its_row_in_the_command_reference():
    rows = (ROOT / "docs/commands.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    missing = [name for name in sub.choices if not re.search(rf"^\| `{re.escape(name)}\b", rows, re.M)]
    assert not missing, f"subcommands without a row in docs/commands.md: {missing}"
