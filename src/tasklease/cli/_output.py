"""How listings print: ``-o table`` (the default on a terminal), ``-o json`` (one JSON
document: an array of objects, the API's fields, stable), ``-o yaml`` (the same as YAML)
or, when the output is not a terminal and no format is asked for, plain tab-separated
lines with a header and nothing cut. Every value is data, never Rich markup, and reaches
the terminal with no control character or Unicode line break as it is (``rules.controls``:
each is written ``\\uXXXX``, as JSON writes it)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from tasklease.cli._common import out
from tasklease.rules.controls import escaped

__all__ = ["Column", "Output", "OutputOpt", "dump", "emit", "field", "plural"]


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OutputOpt = Annotated[
    Output | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FORMAT",
        help="table (default on a terminal), json or yaml; piped without -o: plain "
        "tab-separated lines, nothing cut.",
        case_sensitive=False,
    ),
]

Column = tuple[str, str, Callable[[dict[str, Any]], str]]


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 agent``, ``2 agents`` (or ``words`` for an irregular plural)."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def dump(rows: Sequence[dict[str, Any]], output: Output) -> None:
    if output is Output.json:
        # JSON escapes C0 controls itself, not DEL, C1 or the Unicode separators.
        sys.stdout.write(escaped(json.dumps(list(rows), indent=2, ensure_ascii=False)) + "\n")
    else:
        import yaml  # type: ignore[import-untyped]

        class Dumper(yaml.SafeDumper):  # type: ignore[misc]
            pass

        def text(dumper: Any, value: str) -> Any:
            # Double-quoted, every control character is escaped (``\x9B``, ``\N``, ``\L``,
            # ``\P``); PyYAML's own choice writes U+0085, U+2028 and U+2029 raw.
            style = '"' if escaped(value) != value else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

        Dumper.add_representer(str, text)
        # PyYAML writes the bidi controls raw even double-quoted: each is escaped after,
        # inside the double quotes the representer gave its string.
        sys.stdout.write(
            escaped(
                yaml.dump(
                    list(rows), Dumper=Dumper, sort_keys=False, allow_unicode=True, width=10_000
                )
            )
        )
    sys.stdout.flush()


def emit(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    output: Output | None,
    *,
    caption: str = "",
) -> None:
    """Print ``rows`` (the API's objects) in the asked ``output``; ``columns`` (key,
    header, formatter) say what a table shows."""
    if output in (Output.json, Output.yaml):
        dump(rows, output)
        return
    if output is None and not sys.stdout.isatty():
        sys.stdout.write("\t".join(header for _, header, _ in columns) + "\n")
        for row in rows:
            cells = (
                escaped(shown(row).replace("\t", " ").replace("\n", " ")) for _, _, shown in columns
            )
            sys.stdout.write("\t".join(cells) + "\n")
        sys.stdout.flush()
        return
    table = Table(*(header for _, header, _ in columns), caption=caption or None)
    for row in rows:
        table.add_row(*(escaped(shown(row)) for _, _, shown in columns))
    out.print(table)  # markup off: every cell as written


def field(key: str) -> Callable[[dict[str, Any]], str]:
    """A column showing ``row[key]`` (lists space-joined)."""

    def shown(row: dict[str, Any]) -> str:
        value = row.get(key, "")
        if isinstance(value, list):
            return " ".join(str(v) for v in value)
        return "" if value is None else str(value)

    return shown
