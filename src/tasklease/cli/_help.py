"""How the ``tasklease`` command's help reads: the one place that turns what the code says
(docstrings, ``help=`` strings, metavars) into what ``--help`` prints.

* A help text is prose. Its paragraphs are separated by a blank line; the line breaks
  inside a paragraph are the source's wrapping, not the reader's, so they are joined and
  the terminal wraps the paragraph to its width. A paragraph that starts with ``\\b`` (the
  Click convention) keeps its lines.
* The first paragraph of a command's help is its summary, the line the group's listing
  shows (tests/cli/test_cli_help.py holds every command to one).
* A parameter shows what it takes, never a Python type: an option that takes a value
  shows its metavar (``--url URL``, ``--ttl SECONDS``), which each option declares; a flag
  shows nothing; an argument shows its metavar, by default its name in capitals (Click's
  convention: ``APP_ID``).

:class:`CommandTree` is the root group's class (``typer.Typer(cls=CommandTree)``): when
Typer has built the command tree, it applies these rules to every command and group of
it, once.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

__all__ = ["CommandTree", "reflow"]


def reflow(text: str) -> str:
    """``text`` as paragraphs of one line each (a ``\\b`` paragraph kept as written)."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
        if p.strip()
    )


class _Argument(TyperArgument):
    """An argument whose help row shows its metavar only, not its Python type."""

    def display_type_rich(self, ctx: Any) -> str | None:  # Typer's vendored Click Context
        return None


def _tidy_parameter(param: Any) -> None:
    """One parameter (Typer's, which vendors Click: hence ``Any``) under the rules."""
    if getattr(param, "help", None):
        param.help = reflow(param.help)
    if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
        param.metavar = ""  # a flag takes no value: nothing to show
    elif isinstance(param, TyperArgument):
        if param.metavar is None:
            param.metavar = (param.name or "").upper()
        param.__class__ = _Argument


def _tidy(command: Any) -> None:
    """``command`` and, for a group, every command under it."""
    if command.help:
        command.help = reflow(command.help)
    # --help is made on first use: make it now, with the names the command's contexts use.
    help_option = command.get_help_option(typer.Context(command, **command.context_settings))
    for param in [*command.params, help_option]:
        if param is not None:
            _tidy_parameter(param)
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            _tidy(sub)


class CommandTree(TyperGroup):
    """The root group: the help rules of this module applied to the whole tree."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _tidy(self)

    def get_params(self, ctx: Any) -> list[Any]:  # Typer's vendored Click Context
        # Typer adds the completion options to the root after building it.
        params = super().get_params(ctx)
        for param in params:
            _tidy_parameter(param)
        return params
