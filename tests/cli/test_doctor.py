"""``tasklease doctor``: a fresh data directory passes; each risky setting is found, named,
explained, and (when high) fails the check with exit 2."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import CliRunner

from tasklease.cli import _doctor
from tasklease.cli.main import app

runner = CliRunner()


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1"})
    return env


def _tasklease(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", *args],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory as `make run` makes it: `tasklease init` with the admin secret
    written beside the rest."""
    base = tmp_path_factory.mktemp("doctor-template")
    data = base / "data"
    done = _tasklease(
        "init", "--data-dir", str(data), "--secret-file", str(data / "admin-secret"), cwd=base
    )
    assert done.returncode == 0, done.stderr
    return data


@pytest.fixture
def data(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private copy of the template (modes kept), and an environment without settings."""
    copy = tmp_path / "data"
    shutil.copytree(template, copy)
    for name in list(os.environ):
        if name.startswith("TASKLEASE_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(_doctor, "clock_synchronised", lambda: None)  # not this machine's
    yield copy


def doctor(data: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    """Run ``tasklease doctor --json``: its exit code and findings by check name."""
    result = runner.invoke(app, ["doctor", "--data-dir", str(data), "--json", *extra], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    report = json.loads(result.stdout)
    assert report["passed"] is (result.exit_code == 0)
    return result.exit_code, report


def findings(report: dict[str, Any], check: str) -> list[dict[str, str]]:
    return [f for f in report["findings"] if f["check"] == check]


def assert_high(report: dict[str, Any], check: str) -> dict[str, str]:
    found = findings(report, check)
    assert found, report["findings"]
    assert any(f["severity"] == "high" for f in found), found
    for finding in found:
        assert finding["title"] and finding["why"] and finding["fix"]
    return next(f for f in found if f["severity"] == "high")


# --- a fresh data directory ----------------------------------------------------------------


def test_a_fresh_data_directory_has_no_high_finding(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init = _tasklease(
        "init", "--data-dir", str(data), "--secret-file", str(data / "admin-secret"), cwd=tmp_path
    )
    assert init.returncode == 0, init.stderr
    done = _tasklease("doctor", "--data-dir", str(data), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HIGH" not in done.stdout
    assert "0 high" in done.stdout and "no high finding" in done.stdout
    # Still worth saying: the defaults a production deployment changes.
    assert "heartbeat-supervision-off" in done.stdout
    assert "default-issuer" in done.stdout

    as_json = _tasklease("doctor", "--data-dir", str(data), "--json", cwd=tmp_path)
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert report["passed"] is True and report["counts"]["high"] == 0
    assert {f["severity"] for f in report["findings"]} <= {"medium", "low"}


# --- each high check -----------------------------------------------------------------------


def test_plaintext_key_provider(data: Path) -> None:
    code, report = doctor(data, env={"TASKLEASE_KEY_PROVIDER": "plaintext"})
    assert code == 2
    assert "plaintext" in assert_high(report, "plaintext-signing-key")["title"]


def test_a_plaintext_key_file_left_in_the_key_directory(data: Path) -> None:
    leftover = data / "keys" / "signing-20200101T000000000000Z-AAAAAAAA.pem"
    fd = os.open(leftover, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n")
    code, report = doctor(data)
    assert code == 2
    assert leftover.name in assert_high(report, "plaintext-signing-key")["title"]


# Would fail if: doctor looked for plaintext keys in the key directory alone, and said
# nothing of a tenant's (keys/tenants/<name>, and its log key), which sign as well.
@pytest.mark.parametrize("where", ["log", "tenants/acme", "tenants/acme/log"])
def test_a_plaintext_key_file_in_a_tenants_or_the_logs_key_directory(
    data: Path, where: str
) -> None:
    directory = data / "keys" / where
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    leftover = directory / "signing-20200101T000000000000Z-AAAAAAAA.pem"
    fd = os.open(leftover, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n")
    code, report = doctor(data)
    assert code == 2
    assert f"{where}/{leftover.name}" in assert_high(report, "plaintext-signing-key")["title"]


@pytest.mark.parametrize(
    ("relative", "mode"),
    [
        ("key-passphrase", 0o644),
        ("admin-secret", 0o640),
        ("keys/nonce.secret", 0o604),
        (".", 0o777),  # the data directory: anyone may replace what is in it
        ("config.toml", 0o666),
        ("tasklease.db", 0o646),
    ],
)
def test_permissive_file_modes(data: Path, relative: str, mode: int) -> None:
    path = data / relative
    if not path.exists():  # made by the first `serve` when `init` did not make it
        path.touch(0o600)
    path.chmod(mode)
    code, report = doctor(data)
    assert code == 2
    finding = assert_high(report, "file-mode")
    assert f"{mode:04o}" in finding["title"]
    assert "chmod" in finding["fix"]


def test_a_key_file_readable_by_others(data: Path) -> None:
    key = next((data / "keys").glob("signing-*.pem"))
    key.chmod(0o644)
    code, report = doctor(data)
    assert code == 2
    assert key.name in assert_high(report, "file-mode")["title"]


def test_a_database_readable_by_others_is_medium(data: Path) -> None:
    (data / "tasklease.db").touch(0o600)
    (data / "tasklease.db").chmod(0o644)
    code, report = doctor(data)
    assert code == 0
    (finding,) = findings(report, "file-mode")
    assert finding["severity"] == "medium"


def test_files_owned_by_another_user(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 4242)  # the broker's user is someone else
    code, report = doctor(data)
    assert code == 2
    assert "uid 4242" in assert_high(report, "file-owner")["title"]


def test_tls_off_beyond_loopback(data: Path) -> None:
    code, report = doctor(data, env={"TASKLEASE_HOST": "0.0.0.0"})  # noqa: S104
    assert code == 2
    assert "0.0.0.0" in assert_high(report, "tls-off")["title"]

    # TLS on: nothing to say. Behind trusted proxies: the last hop only (medium).
    assert not findings(doctor(data, env={"TASKLEASE_HOST": "127.0.0.1"})[1], "tls-off")
    behind = {"TASKLEASE_HOST": "10.0.0.2", "TASKLEASE_TRUSTED_PROXIES": "10.0.0.1"}
    code, report = doctor(data, env=behind)
    assert code == 0
    assert [f["severity"] for f in findings(report, "tls-off")] == ["medium"]
    assert [f["severity"] for f in findings(report, "public-url-unset")] == ["medium"]


@pytest.mark.parametrize("network", ["0.0.0.0/0", "::/0", "10.0.0.0/4"])
def test_trusted_proxies_wide_open(data: Path, network: str) -> None:
    code, report = doctor(data, env={"TASKLEASE_TRUSTED_PROXIES": network})
    assert code == 2
    assert network.split("/")[1] in assert_high(report, "trusted-proxies-wide")["title"]


def test_a_proxy_subnet_is_fine_and_a_private_network_is_medium(data: Path) -> None:
    env = {"TASKLEASE_TRUSTED_PROXIES": "10.1.2.0/24", "TASKLEASE_PUBLIC_URL": "https://b.example"}
    assert not findings(doctor(data, env=env)[1], "trusted-proxies-wide")
    code, report = doctor(data, env={**env, "TASKLEASE_TRUSTED_PROXIES": "10.0.0.0/8"})
    assert code == 0
    assert [f["severity"] for f in findings(report, "trusted-proxies-wide")] == ["medium"]


def test_admin_secret_missing(data: Path, tmp_path: Path) -> None:
    config = tmp_path / "bare.toml"
    config.write_text(f'data_dir = "{data.as_posix()}"\n')
    config.chmod(0o600)
    code, report = doctor(data, "--config", str(config))
    assert code == 2
    assert_high(report, "admin-secret-missing")


# Would fail if: doctor, the deployment gate, passed (a medium finding) a configuration
# `serve` refuses to start with: an admin_secret_hash that is no argon2 hash (the secret
# pasted in place of its hash, or a hash a shell mangled), or quoted it.
PLAIN_HASH = "plain-admin-secret-where-its-hash-belongs-42"  # noqa: S105 - not to be shown


@pytest.mark.parametrize("where", ["file", "environment"])
def test_an_admin_secret_hash_serve_refuses_is_high(data: Path, where: str) -> None:
    env: dict[str, str] = {}
    if where == "file":
        config = data / "config.toml"
        text = re.sub(
            r'^admin_secret_hash = "[^"]*"$', f'admin_secret_hash = "{PLAIN_HASH}"',
            config.read_text(), flags=re.MULTILINE,
        )  # fmt: skip
        config.write_text(text)
    else:
        env["TASKLEASE_ADMIN_SECRET_HASH"] = PLAIN_HASH
    code, report = doctor(data, env=env)
    assert code == 2
    finding = assert_high(report, "admin-secret-hash")
    assert "it is not an argon2 hash" in finding["title"], finding
    assert "serve" in finding["why"], finding
    assert PLAIN_HASH not in json.dumps(report)


def test_an_admin_secret_hash_cut_short_is_high(data: Path) -> None:
    """A real argon2id hash with characters cut off its end still parses as one, but no
    secret matches it: `serve` refuses it, and doctor says so as high."""
    from argon2 import PasswordHasher

    whole = PasswordHasher().hash("an admin secret of thirty characters")
    for cut in (whole[:-3], whole[:-1]):
        code, report = doctor(data, env={"TASKLEASE_ADMIN_SECRET_HASH": cut})
        assert code == 2
        finding = assert_high(report, "admin-secret-hash")
        assert "it was cut" in finding["title"], finding
        assert cut not in json.dumps(report)


def test_an_argon2_hash_of_another_type_is_medium(data: Path) -> None:
    from argon2 import PasswordHasher, Type

    other = PasswordHasher(type=Type.I).hash("an admin secret of thirty characters")
    code, report = doctor(data, env={"TASKLEASE_ADMIN_SECRET_HASH": other})
    assert code == 0
    assert [f["severity"] for f in findings(report, "admin-secret-hash")] == ["medium"]


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("ab" * 10, "shorter than 24 characters"),
        ("x" * 40, "fewer than 8 distinct characters"),
        ("change-me-to-at-least-16-characters", "placeholder"),  # deploy/env.example's
        ("replace-with-at-least-32-random-characters", "placeholder"),  # kubernetes/'s
    ],
)
def test_admin_secret_weak(data: Path, secret: str, why: str) -> None:
    """The one rule (core.passwords.secret_weakness): the environment's secret stops
    doctor as it stops serve, with the reason; the file `init --secret-file` left is a
    finding. Neither message quotes the secret."""
    result = runner.invoke(
        app, ["doctor", "--data-dir", str(data), "--json"], env={"TASKLEASE_ADMIN_SECRET": secret}
    )
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "TASKLEASE_ADMIN_SECRET is too weak to be the admin secret" in said and why in said
    assert secret not in said

    (data / "admin-secret").write_text(secret + "\n")
    code, report = doctor(data)
    assert code == 2
    finding = assert_high(report, "admin-secret-weak")
    assert "admin-secret" in finding["title"] and why in finding["title"]
    assert secret not in json.dumps(report)


# --- medium and low ------------------------------------------------------------------------


def test_metrics_listener_beyond_loopback(data: Path) -> None:
    code, report = doctor(data, env={"TASKLEASE_METRICS_LISTEN": "0.0.0.0:9464"})
    assert code == 0
    assert [f["severity"] for f in findings(report, "metrics-public")] == ["medium"]
    assert not findings(doctor(data)[1], "metrics-public")  # loopback, the default


def test_heartbeat_and_identity_defaults(data: Path) -> None:
    _, report = doctor(data)
    assert [f["severity"] for f in findings(report, "heartbeat-supervision-off")] == ["medium"]
    assert [f["severity"] for f in findings(report, "default-issuer")] == ["low"]
    assert [f["severity"] for f in findings(report, "default-trust-domain")] == ["low"]
    env = {
        "TASKLEASE_HEARTBEAT_REQUIRED": "true",
        "TASKLEASE_ISSUER": "https://broker.example.com",
        "TASKLEASE_TRUST_DOMAIN": "agents.example.com",
    }
    _, report = doctor(data, env=env)
    checks = {f["check"] for f in report["findings"]}
    assert not checks & {"heartbeat-supervision-off", "default-issuer", "default-trust-domain"}


def test_a_federation_feed_left_unbounded(data: Path) -> None:
    assert not findings(doctor(data)[1], "federation-feed-unbounded")  # 60 s, the default
    _, report = doctor(data, env={"TASKLEASE_FEDERATION_FEED_MAX_STALENESS": "0"})
    assert [f["severity"] for f in findings(report, "federation-feed-unbounded")] == ["medium"]


def test_bearer_agents_admitted_beyond_loopback(data: Path) -> None:
    assert not findings(doctor(data)[1], "bearer-agents")  # loopback, the default
    beyond = {"TASKLEASE_HOST": "0.0.0.0"}
    _, report = doctor(data, env=beyond)
    assert [f["severity"] for f in findings(report, "bearer-agents")] == ["low"]
    required = {**beyond, "TASKLEASE_HOLDER_BINDING": "required"}
    assert not findings(doctor(data, env=required)[1], "bearer-agents")


def test_clock_not_synchronised(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not findings(doctor(data)[1], "clock-unsynchronised")  # undetectable: quiet
    monkeypatch.setattr(_doctor, "clock_synchronised", lambda: False)
    code, report = doctor(data)
    assert code == 0
    assert [f["severity"] for f in findings(report, "clock-unsynchronised")] == ["medium"]


def test_the_human_report_names_each_finding(data: Path) -> None:
    (data / "key-passphrase").chmod(0o644)
    result = runner.invoke(app, ["doctor", "--data-dir", str(data)])
    assert result.exit_code == 2
    assert "HIGH   file-mode:" in result.stdout
    assert "why:" in result.stdout and "fix: chmod 600" in result.stdout
    assert "high findings: fix them first" in result.stdout


def test_an_unusable_configuration_is_exit_2(data: Path) -> None:
    result = runner.invoke(
        app, ["doctor", "--data-dir", str(data)], env={"TASKLEASE_TLS_MODE": "bogus"}
    )
    assert result.exit_code == 2
    assert "tls_mode" in result.stderr


# --- the database connection ---------------------------------------------------------------


_REMOTE = "postgresql://tasklease:S3cretDbPass@db.internal:5432/tasklease"


@pytest.mark.parametrize(
    "url",
    [
        _REMOTE,  # libpq's default, sslmode=prefer: clear text whenever an attacker says so
        f"{_REMOTE}?sslmode=disable",
        f"{_REMOTE}?sslmode=allow",
        f"{_REMOTE}?sslmode=prefer",
        "postgresql://tasklease@127.0.0.1,db.internal/tasklease",  # one host of a list
        "postgresql:///tasklease?host=db.internal",  # the host as a query parameter
    ],
)
def test_a_database_reached_over_the_network_without_tls_is_high(data: Path, url: str) -> None:
    code, report = doctor(data, env={"TASKLEASE_DATABASE": url})
    assert code == 2
    finding = assert_high(report, "database-tls")
    assert "db.internal" in finding["title"]
    assert "S3cretDbPass" not in json.dumps(report)  # the URL's password is never shown


def test_a_database_reached_at_a_remote_hostaddr_is_judged_by_it(data: Path) -> None:
    """libpq connects to ``hostaddr`` whatever ``host`` names (``host`` then only names
    the server for its certificate): a local-looking ``host`` is not a local database."""
    url = "postgresql://tasklease@localhost/tasklease?hostaddr=10.0.0.5"
    code, report = doctor(data, env={"TASKLEASE_DATABASE": url})
    assert code == 2
    assert "10.0.0.5" in assert_high(report, "database-tls")["title"]


def test_a_database_connection_that_does_not_check_the_server_is_medium(data: Path) -> None:
    code, report = doctor(data, env={"TASKLEASE_DATABASE": f"{_REMOTE}?sslmode=require"})
    assert code == 0
    assert [f["severity"] for f in findings(report, "database-tls")] == ["medium"]


@pytest.mark.parametrize(
    ("url", "extra"),
    [
        (f"{_REMOTE}?sslmode=verify-full", {}),
        (f"{_REMOTE}?sslmode=verify-ca", {}),
        (_REMOTE, {"PGSSLMODE": "verify-full"}),  # libpq's own variable
        ("postgresql://tasklease@localhost/tasklease", {}),
        ("postgresql://tasklease@127.0.0.1:5432/tasklease", {}),
        ("postgresql://tasklease@[::1]/tasklease", {}),
        ("postgresql:///tasklease?host=/run/postgresql", {}),  # a unix socket
        ("postgresql:///tasklease", {}),  # libpq's default: the local socket
    ],
)
def test_a_database_reached_with_tls_verified_or_on_this_machine_is_fine(
    data: Path, url: str, extra: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGSSLMODE", raising=False)
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.delenv("PGHOSTADDR", raising=False)
    _, report = doctor(data, env={"TASKLEASE_DATABASE": url, **extra})
    assert not findings(report, "database-tls"), report["findings"]


def test_a_database_password_holding_url_characters_is_never_shown(data: Path) -> None:
    url = "postgresql://tasklease:Pa?host=S3cret,x@y/z@db.internal/tasklease"
    code, report = doctor(data, env={"TASKLEASE_DATABASE": url})
    assert code == 2
    assert "db.internal" in assert_high(report, "database-tls")["title"]
    assert "S3cret" not in json.dumps(report)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tasklease:pw-not-shown@127.0.0.1:1/tasklease?no_such_keyword=1",
        "postgresql://tasklease:pw-not-shown%zz@127.0.0.1:1/tasklease",
    ],
)
def test_a_database_url_libpq_cannot_parse_is_high(data: Path, url: str) -> None:
    """``serve`` refuses such a URL (decision 317); the deployment check passed it."""
    code, report = doctor(data, env={"TASKLEASE_DATABASE": url})
    assert code == 2
    finding = assert_high(report, "database-url")
    assert "libpq cannot parse" in finding["why"]
    assert "pw-not-shown" not in json.dumps(report)
