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
import re
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer

from tasklease.cli._common import ForceOpt, fail, out, write_private

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


def _installed(name: str) -> metadata.Distribution | None:
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
        if parsed is not None and parsed[2] is not None:
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
            name, extras, belongs = parsed
            if belongs is not None and belongs not in wanted.get(key, set()):
                continue
            child = _installed(name)
            if child is None:
                continue  # another platform's, or an extra not installed
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
        typer.Option("--output", "-o", help="Write it to this new file rather than stdout."),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """A CycloneDX 1.5 bill of materials (JSON) of tasklease and what it runs on, as
    installed here (local; reads installed metadata only)."""
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
