"""Every ``--help`` of the ``tasklease`` command reads as a user needs it to.

The rules are those of :mod:`tasklease.cli._help`, held here on the whole command tree as
``tasklease ... --help`` prints it:

* a help text is whole paragraphs, wrapped by the terminal, never by the source: on a
  terminal wide enough that nothing wraps, every line of a command's description is a
  whole paragraph, so it ends a sentence;
* each command has a summary, its first paragraph: one short sentence (or two), which is
  the line its group lists for it;
* a parameter shows what it takes (a metavar: ``URL``, ``SECONDS``, ``APP_ID``), never a
  Python type (``<str>``, ``<int>``, ``<bool>``, ``<path>``); a flag shows nothing; an
  argument says what it is;
* nothing printed is wider than the terminal.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
import typer
from cli_runner import CliRunner

from tasklease.cli.main import app

ROOT = typer.main.get_command(app)


def _tree() -> dict[str, Any]:
    """Every command and group, by its path (``""`` is ``tasklease`` itself)."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: list[str]) -> None:
        found[" ".join(path)] = command
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(ROOT, [])
    return found


TREE = _tree()
PATHS = sorted(TREE)

# What Typer prints for a parameter whose metavar says nothing: its Python type.
PYTHON_TYPE = re.compile(
    r"<(?:str|int|float|bool|path|file|datetime|uuid|list\[[^>\]]*\]|[a-z ]+ range"
    r"|[a-z_]+(?:\|[a-z_]+)+)>"
)
# A metavar: what the value is, in capitals (FILE, APP_ID, FOREIGN=LOCAL, HOST:PORT, PATH...).
METAVAR = re.compile(r"^[A-Z][A-Z0-9_]*(?:[=:][A-Z][A-Z0-9_]*)?(?:\.\.\.)?$")
# The end of a sentence, closing brackets or quotes allowed after it.
SENTENCE_END = re.compile(r"[.!?][)\]'\"`]*$")
SUMMARY_MAX = 88


@cache
def _help(path: str, columns: int) -> str:
    args = [*path.split(), "--help"]
    result = CliRunner().invoke(
        app, args, env={"COLUMNS": str(columns), "TERM": "dumb"}, prog_name="tasklease"
    )
    assert result.exit_code == 0, result.output
    return result.output


def _description(text: str) -> list[str]:
    """The lines of the help's description: after the usage, before the first panel."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:"))
    end = next((i for i, line in enumerate(lines) if line.startswith("╭")), len(lines))
    return [line.strip() for line in lines[start + 1 : end] if line.strip()]


def _summary(command: Any) -> str:
    return str(command.help or "").split("\n\n", 1)[0]


def _params(command: Any) -> list[Any]:
    return list(command.get_params(typer.Context(command)))


@pytest.mark.parametrize("path", PATHS)
def test_every_line_of_a_description_ends_a_sentence(path: str) -> None:
    # 1000 columns: no paragraph wraps, so a line that stops mid-sentence is a line break
    # the source or the renderer put there.
    description = _description(_help(path, 1000))
    assert description, f"`tasklease {path}` has no help text"
    broken = [line for line in description if not SENTENCE_END.search(line)]
    assert broken == [], f"`tasklease {path} --help`: lines that stop mid-sentence"


@pytest.mark.parametrize("path", PATHS)
def test_every_command_has_a_one_line_summary_its_group_lists(path: str) -> None:
    command = TREE[path]
    summary = _summary(command)
    assert summary and "\n" not in summary, f"`tasklease {path}`: no one-line summary"
    assert len(summary) <= SUMMARY_MAX, f"`tasklease {path}`: summary longer than a line"
    assert SENTENCE_END.search(summary), f"`tasklease {path}`: summary is not a sentence"
    if path:
        parent, _, name = path.rpartition(" ")
        listing = _help(parent, 1000)
        assert re.search(rf"│ {re.escape(name)} +{re.escape(summary)} +│", listing), (
            f"`tasklease {parent} --help` does not list `{name}` with its summary"
        )


@pytest.mark.parametrize("path", PATHS)
def test_every_parameter_shows_what_it_takes(path: str) -> None:
    command = TREE[path]
    wrong = []
    for param in _params(command):
        shown = param.display_type_rich(typer.Context(command)) or ""
        if getattr(param, "is_flag", False):
            if shown:
                wrong.append(f"flag {param.opts[0]} shows {shown!r}")
        elif param.param_type_name == "argument":
            if shown or not METAVAR.match(param.metavar or ""):
                wrong.append(f"argument {param.name} shows {param.metavar!r} {shown!r}")
            if not param.help:
                wrong.append(f"argument {param.name} says nothing of itself")
        elif not METAVAR.match(shown):
            wrong.append(f"option {param.opts[0]} shows {shown!r}")
        if param.help is not None and not SENTENCE_END.search(param.help):
            wrong.append(f"{param.name}'s help is not a sentence: {param.help!r}")
    assert wrong == [], f"`tasklease {path}`"


@pytest.mark.parametrize("columns", [80, 200])
def test_no_help_prints_a_python_type_or_goes_past_the_terminal(columns: int) -> None:
    for path in PATHS:
        text = _help(path, columns)
        assert PYTHON_TYPE.findall(text) == [], f"`tasklease {path} --help`"
        wide = [line for line in text.splitlines() if len(line) > columns]
        assert wide == [], f"`tasklease {path} --help` at {columns} columns"
