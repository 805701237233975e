"""Render docs/api.md from the OpenAPI document the broker serves.

    python scripts/gen_api_docs.py          rewrite docs/api.md
    python scripts/gen_api_docs.py --check  exit 1 if docs/api.md is stale

The document (``tasklease.http.openapi.openapi_document``) is the single source; this
script only lays it out as Markdown, so the reference cannot drift from the API.
"""

from __future__ import annotations

import argparse
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
        schema = body["content"]["application/json"]["schema"]
        lines += [f"**Request body** ({_type(document, schema)}, JSON)", ""]
        lines += [*_fields_table(document, schema), ""]
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is stale")
    args = parser.parse_args(argv)
    text = render(openapi_document())
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else None
    if args.check:
        if current != text:
            print(
                f"{DOC_PATH} is out of date: run `python scripts/gen_api_docs.py`",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != text:
        DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOC_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
