"""``tasklease sbom``: a CycloneDX bill of materials of the broker as installed here.

What a security review of a deployment asks first is what runs: this lists the installed
``tasklease`` distribution and every installed distribution it requires, followed
through their own requirements (the extras each asks for included, requirements that
are not installed left out). Each is given with its version, its package URL
(``pkg:pypi/<name>@<version>``), its licence as its metadata states it, and what it
depends on. CycloneDX 1.5, JSON. It reads the installed distributions' metadata only:
no network, no hashing of files.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tasklease.cli._common import ForceOpt, fail, out, write_private

# Every command imports this module (`tasklease --help` loads every command): what only
# `tasklease sbom` uses (importlib.metadata, platform, uuid) is imported when it runs.
if TYPE_CHECKING:
    from importlib import metadata

__all__ = ["bill_of_materials", "register"]

ROOT = "tasklease"
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _normal(name: str) -> str:
    """A distribution name as package indexes compare it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(text: str) -> tuple[str, set[str], str | None] | None:
    """``(name, extras asked for, the extra it belongs to or None)`` of one
    ``Requires-Dist`` line; None for a line that names no distribution."""
    spec, _, marker = text.partition(";")
    found = _NAME.match(spec)
    if found is None:
        return None
    extras = {_normal(e.strip()) for e in (found[2] or "").split(",") if e.strip()}
    belongs = _EXTRA.search(marker)
    return found[1], extras, _normal(belongs[1]) if belongs else None


# PEP 508 environment markers, judged here as pip judges them when it installs: a
# requirement whose marker fails here (another Python, another platform) is none of this
# environment's, whether or not its distribution happens to be installed for another.
_TOKEN = re.compile(
    r"""\s*(?:(?P<text>'[^']*'|"[^"]*")|(?P<op>===|==|!=|<=|>=|~=|<|>|\(|\)|not\s+in\b|in\b)"""
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)
_RELEASE = re.compile(r"(\d+(?:\.\d+)*)(?:(a|b|rc)(\d+))?")


class _Undecided(Exception):
    """A marker this reader cannot judge: the requirement is taken as applying."""


def _environment() -> dict[str, str]:
    import platform

    impl = sys.implementation.version
    version = f"{impl.major}.{impl.minor}.{impl.micro}"
    if impl.releaselevel != "final":
        version += f"{impl.releaselevel[0]}{impl.serial}"
    return {
        "os_name": os.name,
        "sys_platform": sys.platform,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "python_full_version": platform.python_version(),
        "implementation_name": sys.implementation.name,
        "implementation_version": version,
    }


def _version(text: str) -> tuple[tuple[int, ...], tuple[int, int]] | None:
    found = _RELEASE.fullmatch(text.strip())
    if found is None:
        return None
    release = tuple(int(part) for part in found[1].split("."))
    release += (0,) * (6 - len(release))
    pre = (
        (1, 0) if found[2] is None else (0, ("a", "b", "rc").index(found[2]) * 1000 + int(found[3]))
    )
    return release, pre


def _compare(left: str, op: str, right: str) -> bool:
    if op == "in":
        return left in right
    if op == "not in":
        return left not in right
    if op in ("==", "!=") and right.endswith(".*"):
        ours, theirs = _version(left), _version(right[:-2])
        if ours is None or theirs is None:
            raise _Undecided(right)
        count = len(right[:-2].split("."))
        same = ours[0][:count] == theirs[0][:count]
        return same if op == "==" else not same
    ours, theirs = _version(left), _version(right)
    if ours is not None and theirs is not None and op != "===":
        if op == "~=":
            count = len(right.split(".")) - 1
            if count < 1:
                raise _Undecided(right)
            return ours >= theirs and ours[0][:count] == theirs[0][:count]
        return {
            "==": ours == theirs,
            "!=": ours != theirs,
            "<": ours < theirs,
            "<=": ours <= theirs,
            ">": ours > theirs,
            ">=": ours >= theirs,
        }[op]
    strings = {
        "==": left == right,
        "===": left == right,
        "!=": left != right,
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
    }
    if op not in strings:
        raise _Undecided(op)
    return strings[op]


def _holds(marker: str, values: dict[str, str]) -> bool:
    """Whether ``marker`` holds for ``values`` (raises _Undecided for what it cannot read)."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while marker[position:].strip():
        found = _TOKEN.match(marker, position)
        if found is None or found.end() == position:
            raise _Undecided(marker)
        kind = found.lastgroup or ""
        token = found[kind]
        tokens.append((kind, " ".join(token.split()) if kind == "op" else token))
        position = found.end()
    at = 0

    def value() -> tuple[str, str | None]:
        nonlocal at
        if at >= len(tokens):
            raise _Undecided(marker)
        kind, token = tokens[at]
        at += 1
        if kind == "text":
            return token[1:-1], None
        if kind == "word" and token in values:
            return values[token], token
        raise _Undecided(token)

    def comparison() -> bool:
        nonlocal at
        if at < len(tokens) and tokens[at] == ("op", "("):
            at += 1
            held = either()
            if at >= len(tokens) or tokens[at] != ("op", ")"):
                raise _Undecided(marker)
            at += 1
            return held
        left, left_name = value()
        if at >= len(tokens) or tokens[at][0] != "op" or tokens[at][1] in "()":
            raise _Undecided(marker)
        op = tokens[at][1]
        at += 1
        right, right_name = value()
        if "extra" in (left_name, right_name):  # extras compare by normalized name
            left, right = _normal(left), _normal(right)
        return _compare(left, op, right)

    def both() -> bool:
        nonlocal at
        held = comparison()
        while at < len(tokens) and tokens[at] == ("word", "and"):
            at += 1
            held = comparison() and held
        return held

    def either() -> bool:
        nonlocal at
        held = both()
        while at < len(tokens) and tokens[at] == ("word", "or"):
            at += 1
            held = both() or held
        return held

    held = either()
    if at != len(tokens):
        raise _Undecided(marker)
    return held


def _applies(marker: str, extras: set[str]) -> bool:
    """Whether a requirement with ``marker`` is one of a distribution installed with
    ``extras``: the marker holds here with no extra or with one of them. A marker this
    reader cannot judge counts as holding (the requirement is listed if installed)."""
    if not marker.strip():
        return True
    values = _environment()
    try:
        return any(_holds(marker, {**values, "extra": e}) for e in ["", *sorted(extras)])
    except _Undecided:
        return True


def _installed(name: str) -> metadata.Distribution | None:
    from importlib import metadata

    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def _field(dist: metadata.Distribution, name: str) -> str:
    meta = dist.metadata
    return str(meta[name] or "") if name in meta else ""


def _licence(dist: metadata.Distribution) -> list[dict[str, Any]]:
    meta = dist.metadata
    expression = _field(dist, "License-Expression")
    if expression:
        return [{"expression": expression}]
    text = _field(dist, "License").strip()
    if text and "\n" not in text and len(text) <= 100:
        return [{"license": {"name": text}}]
    named = [
        c.rsplit("::", 1)[1].strip()
        for c in meta.get_all("Classifier") or []
        if c.startswith("License ::") and c.count("::") >= 2
    ]
    return [{"license": {"name": n}} for n in named]


def _purl(dist: metadata.Distribution) -> str:
    return f"pkg:pypi/{_normal(dist.metadata['Name'])}@{dist.version}"


def bill_of_materials(root: str = ROOT) -> dict[str, Any]:
    """The CycloneDX 1.5 document for ``root`` as installed (module docstring).

    Raises:
        LookupError: ``root`` is not installed.
    """
    top = _installed(root)
    if top is None:
        raise LookupError(f"{root} is not installed")
    # The root's extras: those whose every requirement is installed (the ones it was
    # installed with, as far as its environment shows).
    wanted: dict[str, set[str]] = {_normal(root): set()}
    members: dict[str, set[str]] = {}
    for line in top.requires or []:
        parsed = _requirement(line)
        if (
            parsed is not None
            and parsed[2] is not None
            and _applies(line.partition(";")[2], {parsed[2]})
        ):
            members.setdefault(parsed[2], set()).add(parsed[0])
    wanted[_normal(root)] = {
        extra for extra, names in members.items() if all(_installed(n) is not None for n in names)
    }
    seen: dict[str, metadata.Distribution] = {_normal(root): top}
    depends: dict[str, set[str]] = {}
    queue = [_normal(root)]
    while queue:
        key = queue.pop()
        dist = seen[key]
        refs = depends.setdefault(_purl(dist), set())
        for line in dist.requires or []:
            parsed = _requirement(line)
            if parsed is None:
                continue
            name, extras, _ = parsed
            if not _applies(line.partition(";")[2], wanted.get(key, set())):
                continue  # another Python's or platform's, or an extra not asked for
            child = _installed(name)
            if child is None:
                continue  # not installed
            child_key = _normal(child.metadata["Name"])
            if child_key == key:
                # A distribution naming itself with extras (``tasklease[server]``).
                new = extras - wanted[key]
                wanted[key] |= extras
                if new:
                    queue.append(key)
                continue
            refs.add(_purl(child))
            before = wanted.get(child_key)
            wanted[child_key] = (before or set()) | extras
            if child_key not in seen:
                seen[child_key] = child
                queue.append(child_key)
            elif before is not None and not extras <= before:
                queue.append(child_key)
    components = [
        {
            "type": "library",
            "bom-ref": _purl(dist),
            "name": dist.metadata["Name"],
            "version": dist.version,
            "purl": _purl(dist),
            "licenses": _licence(dist),
        }
        for key, dist in sorted(seen.items())
        if key != _normal(root)
    ]
    main = {
        "type": "application",
        "bom-ref": _purl(top),
        "name": top.metadata["Name"],
        "version": top.version,
        "purl": _purl(top),
        "licenses": _licence(top),
    }
    import uuid

    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "tasklease sbom"}]},
            "component": main,
        },
        "components": components,
        "dependencies": [
            {"ref": ref, "dependsOn": sorted(on)} for ref, on in sorted(depends.items())
        ],
    }


def sbom(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write it to this new file rather than stdout."
        ),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Print a CycloneDX 1.5 bill of materials (JSON) of tasklease as installed here.

    It lists tasklease and what it runs on, read from the installed metadata only (local).
    """
    try:
        document = bill_of_materials()
    except LookupError as exc:
        fail(str(exc))
    text = json.dumps(document, indent=2) + "\n"
    if output is None:
        out.print(text, end="", highlight=False, markup=False, soft_wrap=True)
        return
    write_private(output, text, force=force)
    out.print(f"wrote {output} ({len(document['components'])} components)", highlight=False)


def register(app: typer.Typer) -> None:
    """Attach ``sbom`` to the top-level ``tasklease`` app."""
    app.command("sbom")(sbom)
