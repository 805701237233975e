"""The deployment files validate with what runs offline, hold the hardening they claim,
and the dashboard and alert rules use only metrics the broker serves.

* every YAML and JSON file parses;
* the compose file against the Compose Specification's schema (check-jsonschema's copy);
* the Kubernetes manifests against the API's schemas, strictly (kubernetes-validate);
* the systemd unit with ``systemd-analyze verify`` and ``systemd-analyze security
  --offline=true`` (exposure at most 2.0, "OK");
* the Dockerfile's stages, user and health check (no image is built here);
* every ``tasklease_*`` and ``process_*`` metric in the Grafana dashboard and the
  Prometheus rules is in a broker's ``/v1/metrics``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasklease.client.testing import BrokerForTests

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
_METRIC = re.compile(r"\b((?:tasklease|process)_[a-z0-9_]+)\b")
_SUFFIXES = ("_bucket", "_sum", "_count")


def _yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_every_file_parses() -> None:
    yamls = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(yamls) >= 9
    for path in yamls:
        assert _yaml_documents(path), path
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text())


def test_compose_file_is_valid_and_hardened() -> None:
    checked = _run(
        BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", DEPLOY / "compose.yaml"
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    [compose] = _yaml_documents(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"postgres", "setup", "tasklease-1", "tasklease-2", "prometheus", "grafana"} <= set(
        services
    )
    for name in ("setup", "tasklease-1", "tasklease-2"):
        service = services[name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert service["user"] == "10001:10001"
        assert "no-new-privileges:true" in service["security_opt"]
        env = service["environment"]
        assert env["TASKLEASE_DATABASE"].startswith("postgresql://")
        assert "${TASKLEASE_ADMIN_SECRET:?" in env["TASKLEASE_ADMIN_SECRET"]  # never inline
    for port in (*services["tasklease-1"]["ports"], *services["grafana"]["ports"]):
        assert port.startswith("127.0.0.1:"), port  # published on loopback only
    scrape = _yaml_documents(DEPLOY / "prometheus" / "prometheus.yml")[0]
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["tasklease-1:9464", "tasklease-2:9464"]


def test_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    manifests = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
    checked = _run(BIN / "kubernetes-validate", "--strict", "-k", "1.30.0", *manifests)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    kinds: dict[str, dict[str, Any]] = {}
    for path in manifests:
        for doc in _yaml_documents(path):
            kinds[doc["kind"]] = doc
    assert {"Deployment", "Service", "Secret", "PodDisruptionBudget", "NetworkPolicy", "Job"} <= (
        set(kinds)
    )
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert kinds["Deployment"]["spec"]["replicas"] >= 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    [broker] = pod["containers"]
    for container in (broker, *pod["initContainers"]):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
    assert broker["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
    assert broker["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    secrets = {e["valueFrom"]["secretKeyRef"]["key"] for e in broker["env"] if "valueFrom" in e}
    assert {"admin-secret", "key-passphrase", "database-url"} <= secrets
    assert set(kinds["Secret"]["stringData"]) == secrets
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert set(kinds["NetworkPolicy"]["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_dockerfile_is_multi_stage_unprivileged_and_checks_health() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, re.M)
    assert stages == ["build", "run"]
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD .*/v1/health/live", text, re.M)
    assert "ADD " not in text  # nothing fetched from URLs
    # Dependencies from the lock, hashes required, nothing built; tasklease without deps.
    commands = " ".join(text.replace("\\\n", " ").split()).split("&&")
    installs = [c.split("pip install", 1)[1].strip() for c in commands if "pip install" in c]
    assert len(installs) == 3, installs
    assert installs[0] == "--upgrade pip"
    assert installs[1] == "--require-hashes --only-binary :all: -r deploy/requirements.lock"
    assert installs[2] == "--no-deps /wheels/tasklease-*.whl"
    assert "!deploy/requirements.lock" in (REPO / ".dockerignore").read_text()
    ignore = (REPO / ".dockerignore").read_text()
    assert ignore.splitlines()[1] == "*"  # the context is only what the build needs


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "tasklease.service").read_text()
    for setting in ("ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet="):
        assert f"\n{setting}\n" in unit, setting
    # verify checks that ExecStart's program exists: point it at this environment's.
    here = tmp_path / "tasklease.service"
    here.write_text(unit.replace("/opt/tasklease/bin/tasklease", str(BIN / "tasklease")))
    verified = _run("systemd-analyze", "verify", here, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stderr.strip() == "", verified.stderr
    security = _run("systemd-analyze", "security", "--offline=true", here, cwd=tmp_path)
    assert security.returncode == 0, security.stderr
    exposure = re.search(
        r"Overall exposure level for tasklease.service: ([\d.]+) (\w+)", security.stdout
    )
    assert exposure, security.stdout
    assert float(exposure[1]) <= 2.0 and exposure[2] == "OK"


def _metrics_used() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "tasklease.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    rules = _yaml_documents(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"][0]["rules"]
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["alert"].startswith("Tasklease")
    for where, texts in (("dashboard", exprs), ("alerts", [r["expr"] for r in rules])):
        for text in texts:
            for name in _METRIC.findall(text):
                for suffix in _SUFFIXES:
                    name = name.removesuffix(suffix)
                used.setdefault(name, set()).add(where)
    return used


def test_dashboard_and_alerts_use_only_metrics_the_broker_serves() -> None:
    used = _metrics_used()
    # The alerts the operations guide promises, by the metric each watches.
    for metric in (
        "tasklease_issuance_seconds",
        "tasklease_validation_failures_total",
        "tasklease_revocation_propagation_seconds",
        "tasklease_audit_append_failures_total",
        "tasklease_audit_events_total",  # the events of a database that went back
    ):
        assert "alerts" in used[metric], metric
    with BrokerForTests(metrics_public="token", metrics_listen="") as broker:
        text = broker.admin().metrics()
    served = set(re.findall(r"^# TYPE (\S+) \w+$", text, re.M))
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    missing = {name for name in used if name not in served and name not in samples}
    assert not missing, f"not served by the broker: {sorted(missing)}"
