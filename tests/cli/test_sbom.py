"""``tasklease sbom``: a CycloneDX 1.5 bill of materials of what is installed here."""

from __future__ import annotations

import json
import stat
from importlib import metadata
from pathlib import Path

import pytest
from cli_runner import CliRunner

from tasklease.cli._sbom import _applies, _normal, _requirement, bill_of_materials
from tasklease.cli.main import app

runner = CliRunner()


def test_it_lists_what_the_broker_runs_on_as_installed() -> None:
    bom = bill_of_materials()
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.5")
    assert bom["serialNumber"].startswith("urn:uuid:")
    main = bom["metadata"]["component"]
    assert (main["name"], main["version"]) == ("tasklease", metadata.version("tasklease"))
    assert main["licenses"] == [{"expression": "Apache-2.0"}]
    by_name = {c["name"].lower(): c for c in bom["components"]}
    for name in ("pynacl", "httpx", "cryptography", "starlette", "uvicorn", "psycopg"):
        component = by_name[name]
        assert component["version"] == metadata.version(name)
        assert component["purl"] == f"pkg:pypi/{name}@{component['version']}"
    # What uvicorn[standard] brings (an extra of a requirement) is followed too.
    assert "httptools" in by_name
    refs = {c["bom-ref"] for c in bom["components"]} | {main["bom-ref"]}
    graph = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
    assert set(graph) <= refs and all(set(on) <= refs for on in graph.values())
    assert by_name["pynacl"]["bom-ref"] in graph[main["bom-ref"]]
    assert by_name["cffi"]["bom-ref"] in graph[by_name["pynacl"]["bom-ref"]]


_MARKERS = (
    'python_version < "3.11"',
    'python_version >= "3.11"',
    'python_full_version < "3.11.0" or python_full_version >= "3.11.0"',
    'python_version >= "3.14" and python_version < "3.15"',
    'sys_platform != "win32" and (sys_platform != "cygwin" and '
    'platform_python_implementation != "PyPy")',
    'sys_platform == "win32" or platform_system == "Windows"',
    'implementation_name == "cpython" and python_version ~= "3.0"',
    'platform_machine in "x86_64 aarch64 arm64"',
    '"linux" in sys_platform',
    'os_name not in "nt java"',
    '(python_version<"3.11")and(os_name=="posix")',
    'python_version >= "3.9" and extra == "standard"',
    'extra == "Standard"',
    "extra == 'other' or python_version > '2.7'",
)


def test_environment_markers_are_judged_as_pip_judges_them() -> None:
    # packaging (pip's own marker evaluator) as the reference, on this interpreter.
    reference = pytest.importorskip("packaging.markers")
    for marker in _MARKERS:
        for extra in ("", "standard"):
            expected = reference.Marker(marker).evaluate({"extra": extra})
            assert _applies(marker, {extra} - {""}) is expected, (marker, extra)


def test_the_graph_has_no_requirement_of_another_python_or_platform() -> None:
    # Every edge is a requirement line whose marker holds here (or that has none); a
    # distribution installed for another reason is no dependency of one that asks for it
    # only on another Python (anyio's exceptiongroup, cryptography's typing-extensions).
    reference = pytest.importorskip("packaging.requirements")
    bom = bill_of_materials()
    names = {c["bom-ref"]: c["name"] for c in bom["components"]}
    main = bom["metadata"]["component"]
    names[main["bom-ref"]] = main["name"]
    for edge in bom["dependencies"]:
        dist = metadata.distribution(names[edge["ref"]])
        extras = [""] + list(dist.metadata.get_all("Provides-Extra") or [])
        for target in edge["dependsOn"]:
            lines = [
                reference.Requirement(line)
                for line in dist.requires or []
                if _normal(reference.Requirement(line).name) == _normal(names[target])
            ]
            assert any(
                r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras)
                for r in lines
            ), (edge["ref"], target, [str(r.marker) for r in lines])


def test_requirements_are_read_with_their_extras_and_markers() -> None:
    assert _requirement('cryptography>=44; extra == "server"') == ("cryptography", set(), "server")
    assert _requirement("tasklease[server]; extra == 'cli'") == ("tasklease", {"server"}, "cli")
    assert _requirement("uvicorn[standard, Extra_B]>=0.34") == (
        "uvicorn",
        {"standard", "extra-b"},
        None,
    )
    assert _requirement('tomli>=1.1; python_version < "3.11"') == ("tomli", set(), None)
    assert _requirement(";") is None


def test_it_writes_a_new_file_and_replaces_one_only_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "sbom.cdx.json"
    done = runner.invoke(app, ["sbom", "--output", str(target)])
    assert done.exit_code == 0, done.output
    assert json.loads(target.read_text())["bomFormat"] == "CycloneDX"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    again = runner.invoke(app, ["sbom", "--output", str(target)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert runner.invoke(app, ["sbom", "--output", str(target), "--force"]).exit_code == 0
    printed = runner.invoke(app, ["sbom"])
    assert printed.exit_code == 0 and json.loads(printed.stdout)["specVersion"] == "1.5"
