"""``tasklease sbom``: a CycloneDX 1.5 bill of materials of what is installed here."""

from __future__ import annotations

import json
import stat
from importlib import metadata
from pathlib import Path

from typer.testing import CliRunner

from tasklease.cli._sbom import _requirement, bill_of_materials
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
