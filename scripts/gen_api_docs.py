"""Render docs/api.md from the OpenAPI document the broker serves, and check it.

    python scripts/gen_api_docs.py          rewrite docs/api.md
    python scripts/gen_api_docs.py --check  exit 1 if docs/api.md is stale or wrong

The document (``tasklease.http.openapi.openapi_document``) is the single source; this
script only lays it out as Markdown, so the reference cannot drift from the API.
:func:`check` reads docs/api.md back and compares what it names with the document:
every endpoint, status, error code, parameter and field, both ways.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasklease.http.openapi import openapi_document
from tasklease.http.problems import STATUS_BY_CODE

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "api.md"
_METHOD_ORDER = ("get", "post", "put", "patch", "delete")


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _type(document: dict[str, Any], schema: dict[str, Any]) -> str:
    """A short human name for a schema's type, ignoring the ``null`` of optional fields."""
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    if "anyOf" in schema:
        kinds = [_type(document, s) for s in schema["anyOf"] if s.get("type") != "null"]
        return " or ".join(kinds)
    if "const" in schema:
        return f"`{_json_literal(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "object")
    if kind == "array":
        return f"array of {_type(document, schema.get('items', {}))}"
    if schema.get("format") == "date-time":
        return "string (RFC 3339)"
    return str(kind)


def _json_literal(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fields_table(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    schema = _resolve(document, schema)
    required = set(schema.get("required", []))
    lines = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        need = "required" if name in required else "optional"
        lines.append(
            f"| `{name}` | {_type(document, prop)} | {need} | "
            f"{_cell(prop.get('description', ''))} |"
        )
    return lines


def _nested(document: dict[str, Any], schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The object schemas a schema's fields refer to (by ``$ref`` or inline), one level."""
    found: list[tuple[str, dict[str, Any]]] = []
    for name, prop in _resolve(document, schema).get("properties", {}).items():
        target = prop.get("items", prop) if prop.get("type") == "array" else prop
        # A nullable object field is anyOf [the object, null]: document the object.
        for alternative in target.get("anyOf", target.get("oneOf", [])):
            if "$ref" in alternative:
                target = alternative
                break
        if "$ref" in target:
            found.append((f"`{target['$ref'].rsplit('/', 1)[-1]}`", target))
        elif target.get("type") == "object" and "properties" in target:
            found.append((f"`{name}`", target))
    return found


def _tables(document: dict[str, Any], schema: dict[str, Any], shown: set[str]) -> list[str]:
    """A fields table, then one for each object it refers to that is not shown yet."""
    lines = [*_fields_table(document, schema), ""]
    for label, nested in _nested(document, schema):
        if label not in shown:
            shown.add(label)
            lines += [f"{label} fields:", "", *_tables(document, nested, shown)]
    return lines


def _response_section(document: dict[str, Any], name: str) -> list[str]:
    schema = _resolve(document, {"$ref": f"#/components/schemas/{name}"})
    shown: set[str] = set()
    if "oneOf" in schema:
        lines = ["One of:", ""]
        for alternative in schema["oneOf"]:
            lines += _tables(document, alternative, shown)
        return lines
    if schema.get("type") == "object" and "properties" in schema:
        return _tables(document, schema, shown)
    return [f"{_cell(schema.get('description', _type(document, schema)))}", ""]


def _operation(document: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", f"**{op['summary']}.**", ""]
    lines += [op["description"], ""]
    params = op.get("parameters", [])
    if params:
        lines += ["**Parameters**", "", "| name | in | type | required | description |"]
        lines.append("|---|---|---|---|---|")
        for p in params:
            need = "required" if p.get("required") else "optional"
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_type(document, p['schema'])} | {need} | "
                f"{_cell(p.get('description', ''))} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        content = body["content"]
        schema = content["application/json"]["schema"]
        kind = "form or JSON" if "application/x-www-form-urlencoded" in content else "JSON"
        lines += [f"**Request body** ({_type(document, schema)}, {kind})", ""]
        lines += _tables(document, schema, set())
    for status, response in op["responses"].items():
        if not status.startswith("2"):
            continue
        content = response.get("content")
        if not content:
            lines += [f"**Response {status}**: no body.", ""]
            continue
        media, value = next(iter(content.items()))
        ref = value["schema"]["$ref"].rsplit("/", 1)[-1]
        lines += [f"**Response {status}** (`{media}`, `{ref}`)", ""]
        lines += _response_section(document, ref)
    lines += ["**Errors** (`application/problem+json`)", "", "| status | error_code | when |"]
    lines.append("|---|---|---|")
    for status, response in op["responses"].items():
        for failure in response.get("x-error-codes", []):
            lines.append(f"| {status} | `{failure['error_code']}` | {_cell(failure['when'])} |")
    lines.append("")
    return lines


def render(document: dict[str, Any]) -> str:
    """The Markdown reference for ``document``."""
    info = document["info"]
    lines = [
        "# HTTP API reference",
        "",
        "<!-- Generated by scripts/gen_api_docs.py from the OpenAPI document served at",
        "     /v1/openapi.json. Do not edit by hand: run `python scripts/gen_api_docs.py`. -->",
        "",
        f"{info['title']} {info['version']}: {info['summary']}",
        "",
        info["description"],
        "",
        "Authenticated routes take `Authorization: Bearer <token>`. A missing, invalid, "
        "expired or revoked token answers 401 `unauthorized` with one generic detail; the "
        "precise reason is written to the audit log only.",
        "",
        "## Endpoints",
        "",
        "| method | path | summary | authentication |",
        "|---|---|---|---|",
    ]
    operations: list[tuple[str, str, dict[str, Any]]] = []
    for path, item in document["paths"].items():
        for method in _METHOD_ORDER:
            if method in item:
                operations.append((method, path, item[method]))
    for method, path, op in operations:
        auth = op["description"].rsplit("**Authentication:** ", 1)[-1]
        lines.append(f"| {method.upper()} | `{path}` | {op['summary']} | {_cell(auth)} |")
    lines.append("")
    for tag in document["tags"]:
        lines += [f"## {tag['name'].capitalize()}", "", tag.get("description", ""), ""]
        for method, path, op in operations:
            if tag["name"] in op["tags"]:
                lines += _operation(document, method, path, op)
    lines += _error_table(document, operations)
    return "\n".join(lines).rstrip("\n") + "\n"


def _error_table(
    document: dict[str, Any], operations: Sequence[tuple[str, str, dict[str, Any]]]
) -> list[str]:
    problem = document["components"]["schemas"]["Problem"]
    meaning = {c["const"]: c["description"] for c in problem["properties"]["error_code"]["oneOf"]}
    fields = ", ".join(f"`{name}`" for name in problem["properties"])
    lines = [
        "## Error codes",
        "",
        f"Every error is an RFC 9457 problem (`application/problem+json`) with {fields} "
        "(`hint` only when there is advice). `type` is the code prefixed with "
        f"`{problem['properties']['type']['description'].split('`')[1]}`. Clients should "
        "branch on `error_code`, not on `detail`.",
        "",
        "| error_code | status | meaning | returned by |",
        "|---|---|---|---|",
    ]
    for code, status in STATUS_BY_CODE.items():
        used_by = [
            f"`{method.upper()} {path}`"
            for method, path, op in operations
            if any(
                f["error_code"] == code
                for response in op["responses"].values()
                for f in response.get("x-error-codes", [])
            )
        ]
        where = "every route" if len(used_by) == len(operations) else ", ".join(used_by)
        lines.append(f"| `{code}` | {status} | {_cell(meaning.get(code, ''))} | {where or '-'} |")
    lines.append("")
    return lines


# --- reading docs/api.md back ------------------------------------------------------------

_OPERATION = re.compile(r"### `([A-Z]+) (\S+)`")
_ENDPOINT_ROW = re.compile(r"\| ([A-Z]+) \| `([^`]+)` \|")
_NAMED_ROW = re.compile(r"\| `([^`]+)` \|")
_ERROR_ROW = re.compile(r"\| (\d{3}) \| `([^`]+)` \|")
_CODE_ROW = re.compile(r"\| `([^`]+)` \| (\d{3}) \|")
_SUCCESS = re.compile(r"\*\*Response (\d{3})\*\*")

Key = tuple[str, str]  # (METHOD, path)


class _Described:
    """What docs/api.md names, read back from its Markdown."""

    def __init__(self, text: str) -> None:
        self.listed: list[Key] = []  # the endpoints table
        self.sections: list[Key] = []  # one `### METHOD path` heading each
        self.statuses: dict[Key, set[str]] = {}
        self.errors: dict[Key, set[tuple[str, str]]] = {}
        self.fields: dict[Key, set[str]] = {}
        self.parameters: dict[Key, set[str]] = {}
        self.codes: dict[str, str] = {}  # the error code table: code -> status
        self._read(text)

    def _read(self, text: str) -> None:
        part, op, table = "", ("", ""), ""
        for line in text.splitlines():
            if line.startswith("## "):
                part, op, table = line[3:].strip(), ("", ""), ""
                continue
            heading = _OPERATION.fullmatch(line.strip())
            if heading:
                op, table = (heading[1], heading[2]), ""
                self.sections.append(op)
                self.statuses.setdefault(op, set())
                self.errors.setdefault(op, set())
                self.fields.setdefault(op, set())
                self.parameters.setdefault(op, set())
                continue
            if not line.startswith("|"):
                success = _SUCCESS.match(line)
                if success and op[0]:
                    self.statuses[op].add(success[1])
                continue
            if line.startswith("|---"):
                continue
            header = _header(line)
            if header:
                table = header
                continue
            self._row(line, part, op, table)

    def _row(self, line: str, part: str, op: Key, table: str) -> None:
        if part == "Endpoints":
            if match := _ENDPOINT_ROW.match(line):
                self.listed.append((match[1], match[2]))
        elif part == "Error codes":
            if match := _CODE_ROW.match(line):
                self.codes[match[1]] = match[2]
        elif op[0] and table == "status" and (match := _ERROR_ROW.match(line)):
            self.statuses[op].add(match[1])
            self.errors[op].add((match[1], match[2]))
        elif op[0] and table in ("field", "name") and (match := _NAMED_ROW.match(line)):
            (self.fields if table == "field" else self.parameters)[op].add(match[1])


def _header(line: str) -> str:
    """The first column's name when ``line`` is a table header we know, else ``""``."""
    first = line.strip("|").split("|", 1)[0].strip()
    known = {"method", "field", "name", "status", "error_code"}
    return first if first in known and "`" not in line else ""


def _properties(document: dict[str, Any], schema: dict[str, Any], seen: set[str]) -> set[str]:
    """Every property name a schema can carry, at any depth (through refs and unions)."""
    ref = schema.get("$ref")
    if ref is not None:
        if ref in seen:
            return set()
        seen.add(ref)
        schema = _resolve(document, schema)
    names: set[str] = set()
    for key in ("oneOf", "anyOf", "allOf"):
        for alternative in schema.get(key, []):
            names |= _properties(document, alternative, seen)
    if "items" in schema:
        names |= _properties(document, schema["items"], seen)
    for name, prop in schema.get("properties", {}).items():
        names.add(name)
        names |= _properties(document, prop, seen)
    return names


def check(document: dict[str, Any], text: str) -> list[str]:
    """What ``text`` (docs/api.md) says that ``document`` does not, and the reverse."""
    said = _Described(text)
    problems: list[str] = []
    operations = {
        (method.upper(), path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in _METHOD_ORDER
    }
    for name, keys in (("endpoint table", said.listed), ("sections", said.sections)):
        for key in sorted(set(keys) - set(operations)):
            problems.append(f"{name}: {' '.join(key)} is not in the document")
        for key in sorted(set(operations) - set(keys)):
            problems.append(f"{name}: {' '.join(key)} is not described")
        for key in sorted({k for k in keys if keys.count(k) > 1}):
            problems.append(f"{name}: {' '.join(key)} appears more than once")
    for key in sorted(set(said.sections) & set(operations)):
        where, op = " ".join(key), operations[key]
        responses = op["responses"]
        for status in sorted(said.statuses[key] ^ set(responses)):
            side = "not in the document" if status not in responses else "not described"
            problems.append(f"{where}: status {status} is {side}")
        errors = {
            (status, failure["error_code"])
            for status, response in responses.items()
            for failure in response.get("x-error-codes", [])
        }
        for status, code in sorted(said.errors[key] ^ errors):
            side = "not in the document" if (status, code) not in errors else "not described"
            problems.append(f"{where}: {status} `{code}` is {side}")
        schemas = [
            content["schema"]
            for status, response in responses.items()
            if status.startswith("2")
            for content in response.get("content", {}).values()
        ]
        if "requestBody" in op:
            schemas += [c["schema"] for c in op["requestBody"]["content"].values()]
        fields: set[str] = set()
        for schema in schemas:
            fields |= _properties(document, schema, set())
        for name in sorted(said.fields[key] ^ fields):
            side = "not in the document" if name not in fields else "not described"
            problems.append(f"{where}: field `{name}` is {side}")
        parameters = {p["name"] for p in op.get("parameters", [])}
        for name in sorted(said.parameters[key] ^ parameters):
            side = "not in the document" if name not in parameters else "not described"
            problems.append(f"{where}: parameter `{name}` is {side}")
    problem = document["components"]["schemas"]["Problem"]["properties"]["error_code"]
    codes = {c["const"] for c in problem["oneOf"]}
    for code in sorted(set(said.codes) ^ codes):
        side = "not in the document" if code not in codes else "not described"
        problems.append(f"error codes: `{code}` is {side}")
    for code, status in sorted(said.codes.items()):
        if code in STATUS_BY_CODE and str(STATUS_BY_CODE[code]) != status:
            problems.append(f"error codes: `{code}` is {STATUS_BY_CODE[code]}, not {status}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/api.md is stale or wrong"
    )
    args = parser.parse_args(argv)
    document = openapi_document()
    text = render(document)
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else None
    if args.check:
        problems = check(document, current or "")
        for problem in problems:
            print(f"{DOC_PATH}: {problem}", file=sys.stderr)
        if current != text:
            print(
                f"{DOC_PATH} is out of date: run `python scripts/gen_api_docs.py`",
                file=sys.stderr,
            )
            return 1
        return 1 if problems else 0
    if current != text:
        DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOC_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
