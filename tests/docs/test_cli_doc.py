"""docs/cli.md tells the truth about the ``tasklease`` command.

The command tree is read from the Typer application itself (what ``tasklease --help``
prints) and held to the documentation, both ways:

* every command is documented (a code span that starts with its name), and every
  command the documentation names exists;
* every option a command takes is named in one of its spans, or in the section that
  documents the options several commands share (:data:`SHARED`);
* every option a command's span names is one the command takes, and the placeholder a
  span shows for its value is the metavar ``--help`` shows (``--ttl SECONDS``);
* the exit codes are the ones the CLI uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from tasklease.cli import _common
from tasklease.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cli.md"
TEXT = DOC.read_text(encoding="utf-8")


def _commands() -> tuple[dict[str, set[str]], set[str]]:
    """Every command's path (``audit witness serve``) and its options' names."""
    found: dict[str, set[str]] = {}

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        names: set[str] = set()
        for param in command.params:
            if param.param_type_name == "option":
                names.update(param.opts)
                names.update(param.secondary_opts)
        found[" ".join(path)] = names

    root = typer.main.get_command(app)
    walk(root, [])
    global_options = {name for p in root.params if p.param_type_name == "option" for name in p.opts}
    return found, global_options


COMMANDS, GLOBAL = _commands()

# Options several commands share, documented once, each in its own section of cli.md.
SHARED = {
    "## Output formats": {"--output", "-o", "--all", "--cursor", "--limit", "--json"},
    "## Where the broker is": {"--url", "--admin-secret", "--profile"},
    "Audit filters are those of": {
        "--agent-id",
        "--task-id",
        "--event-type",
        "--outcome",
        "--since",
        "--until",
        "--principal",
    },
    "## Files the CLI writes": {"--force", "--output"},
}


def _section(heading: str) -> str:
    start = TEXT.index(heading)
    if heading.startswith("#"):
        level = heading.split(" ", 1)[0]
        end = TEXT.find(f"\n{level} ", start + 1)
    else:
        end = TEXT.index("\n\n", start)
    return TEXT[start : end if end != -1 else len(TEXT)]


def _spans() -> list[str]:
    """Every inline code span of cli.md, ``tasklease `` and the global options removed
    from its start."""
    spans = []
    for span in re.findall(r"`([^`\n]+)`", TEXT):
        words = span.split()
        if words and words[0] == "tasklease":
            words = words[1:]
        while words and words[0] in GLOBAL | {"NAME", "COMMAND", "..."}:
            words = words[1:]
        spans.append(" ".join(words))
    return spans


def _spans_of(command: str) -> list[str]:
    return [s for s in _spans() if s == command or s.startswith(f"{command} ")]


def _long(options: set[str]) -> set[str]:
    return {o for o in options if o.startswith("--")} - {"--help"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_documented(command: str) -> None:
    assert _spans_of(command), f"docs/cli.md names no `tasklease {command} ...`"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_is_documented(command: str) -> None:
    documented: set[str] = set()
    for span in _spans_of(command):
        documented |= set(re.findall(r"--[a-z][a-z0-9-]*", span))
    for heading, options in SHARED.items():
        if options & COMMANDS[command]:
            section = _section(heading)
            documented |= {o for o in options if f"`{o}" in section or f" {o}" in section}
    # A --flag/--no-flag pair is documented by either half.
    missing = {
        o
        for o in _long(COMMANDS[command]) - documented
        if not ({o.replace("--no-", "--"), o.replace("--", "--no-", 1)} & documented)
    }
    assert missing == set(), f"`tasklease {command}`: options docs/cli.md does not name"


# Spans that read as commands but are not: messages the CLI prints.
NOT_COMMANDS = {"audit tree broken"}


def test_every_documented_command_and_option_exists() -> None:
    groups = {c.rsplit(" ", 1)[0] for c in COMMANDS if " " in c}
    wrong = []
    for span in set(_spans()) - NOT_COMMANDS:
        named = [c for c in COMMANDS if span == c or span.startswith(f"{c} ")]
        if not named:
            first = span.split(" ")[0]
            if first in groups and re.match(r"^[a-z-]+ [a-z-]+( |$)", span):
                sub = " ".join(span.split(" ")[:2])
                if sub not in COMMANDS and sub not in groups:
                    wrong.append(f"no command `{sub}`")
            continue
        command = max(named, key=len)
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", span):
            if option not in COMMANDS[command] | GLOBAL:
                wrong.append(f"`{command}` takes no {option}")
    assert wrong == []


def _metavars() -> dict[str, dict[str, str]]:
    """Every command's options that take a value, with the metavar ``--help`` shows."""
    found: dict[str, dict[str, str]] = {}

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        found[" ".join(path)] = {
            opt: param.metavar
            for param in command.params
            if param.param_type_name == "option" and param.metavar
            for opt in param.opts
        }

    walk(typer.main.get_command(app), [])
    return found


def test_every_documented_placeholder_is_the_metavar_help_shows() -> None:
    metavars = _metavars()
    wrong = []
    for span in set(_spans()) - NOT_COMMANDS:
        named = [c for c in COMMANDS if span == c or span.startswith(f"{c} ")]
        if not named:
            continue
        command = max(named, key=len)
        for option, shown in re.findall(
            r"(?<![\w-])(--[a-z][a-z0-9-]*)[ =]([A-Z][A-Z0-9_]*(?:[=:][A-Z][A-Z0-9_]*)?)\b",
            span,
        ):
            metavar = metavars[command].get(option)
            if metavar is not None and metavar != shown:
                wrong.append(f"`{command} {option} {shown}`: --help says {metavar}")
    assert wrong == []


def test_the_global_options_are_documented() -> None:
    for option in _long(GLOBAL):
        assert f"`tasklease {option}" in TEXT or f"{option}`" in TEXT, option


def test_the_exit_codes_are_the_clis() -> None:
    table = _section("## Errors and exit codes")
    documented = {int(m) for m in re.findall(r"^\| (\d) \|", table, re.M)}
    used = {
        _common.EXIT_OK,
        _common.EXIT_FAILED,
        _common.EXIT_USAGE,
        _common.EXIT_REFUSED,
        _common.EXIT_UNAVAILABLE,
    }
    assert documented == used == {0, 1, 2, 3, 4}
    assert (_common.EXIT_FAILED, _common.EXIT_USAGE) == (1, 2)
    assert (_common.EXIT_REFUSED, _common.EXIT_UNAVAILABLE) == (3, 4)


def test_every_listing_said_to_take_an_output_format_does() -> None:
    section = _section("## Output formats")
    sentence = section[section.index("Every listing") : section.index("takes")]
    listings = re.findall(r"`([a-z -]+)`", sentence)
    assert len(listings) >= 8
    for listing in listings:
        assert {"-o", "--output"} <= COMMANDS[listing], f"`{listing}` takes no -o"
