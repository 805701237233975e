"""What ``load_config`` (and so ``serve``, ``doctor``, ``db migrate``) refuses: a
``TASKLEASE_*`` variable nothing reads, a number of the wrong type, a weak admin secret,
and the admin secret the environment puts in place of the file's, said at start-up.

Each was accepted before (docs/decisions.md 146): a misspelt variable fell back to the
setting's default, ``max_ttl = 3600.99`` became 3600 and ``admin_auth_rate = true`` 1.0,
and the placeholder of deploy/env.example was a working admin secret.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from e2e_support import ADMIN_SECRET, free_port, launch_broker, stop_broker

from tasklease.core.config import Config
from tasklease.core.passwords import hash_secret, new_secret
from tasklease.settings import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
STRONG = "config-checks-admin-secret-0123456789"


def _load(body: str | None = None, tmp_path: Path | None = None, **env: str) -> Config:
    path = os.devnull
    if body is not None:
        assert tmp_path is not None
        file = tmp_path / "config.toml"
        file.write_text(body)
        path = str(file)
    return load_config(path, env=env)


# --- the environment's names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("TASKLEASE_HEARTBEAT_REQUIRD", "TASKLEASE_HEARTBEAT_REQUIRED"),
        ("TASKLEASE_CRITICAL_SCOPE", "TASKLEASE_CRITICAL_SCOPES"),
        ("TASKLEASE_TLS_MOD", "TASKLEASE_TLS_MODE"),
    ],
)
def test_a_misspelt_setting_in_the_environment_is_refused(name: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} is not a setting \\(did you mean {meant}\\?\\)"):
        _load(**{name: "true"})


@pytest.mark.parametrize(
    "name",
    ["Tasklease_HOLDER_BINDING", "tasklease_holder_binding", "TASKLEAS_HOLDER_BINDING",
     "TASKLESE_HOLDER_BINDING"],
)  # fmt: skip
def test_a_setting_under_a_misspelt_prefix_is_refused(name: str) -> None:
    """Ignored, it would leave holder binding at its default without a word."""
    expected = f"{name} is not a setting \\(did you mean TASKLEASE_HOLDER_BINDING\\?\\)"
    with pytest.raises(ConfigError, match=expected):
        _load(**{name: "required"})


@pytest.mark.parametrize("name", ["TASKLIST_FILE", "TASK_LEASE", "LEASE_TASK", "TASKLEASEX"])
def test_other_variables_are_not_taken_for_ours(name: str) -> None:
    _load(**{name: "1"})


def test_an_unknown_variable_is_refused_even_when_empty() -> None:
    with pytest.raises(ConfigError, match="TASKLEASE_NOTHING_LIKE_IT is not a setting: fix"):
        _load(TASKLEASE_NOTHING_LIKE_IT="")


def _names_in_the_repository() -> set[str]:
    names: set[str] = set()
    for top in ("src", "tests", "docs", "examples", "deploy", "scripts", "bench"):
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and path.suffix in {"", ".py", ".md", ".sh", ".yaml", ".toml"}:
                names |= set(re.findall(r"TASKLEASE_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    for name in ("Makefile", "README.md"):
        names |= set(re.findall(r"TASKLEASE_[A-Z0-9_]*[A-Z0-9]", (ROOT / name).read_text()))
    return names - {"TASKLEASE_NOTHING_LIKE_IT", "TASKLEASE_PKCS11", "TASKLEASE_HEARTBEAT_REQUIRD"}


def test_every_variable_the_repository_names_is_a_setting_or_known() -> None:
    """The CLI, the SDK's examples and the tests read TASKLEASE_* variables that are not
    settings; a shell holding one must still serve. A new one goes in settings' list."""
    names = _names_in_the_repository() - {"TASKLEASE_CRITICAL_SCOPE", "TASKLEASE_TLS_MOD"}
    assert {"TASKLEASE_URL", "TASKLEASE_OPERATOR", "TASKLEASE_KEY_PASSPHRASE"} <= names
    values = {"TASKLEASE_ADMIN_SECRET": STRONG, "TASKLEASE_CONFIG": os.devnull}
    env = {name: values.get(name, "") for name in names}
    load_config(os.devnull, env=env)


# --- types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("max_ttl = 3600.99", "max_ttl must be an integer, not 3600.99"),
        ("port = 8080.7", "port must be an integer, not 8080.7"),
        ("clock_skew = 299.999", "clock_skew must be an integer, not 299.999"),
        ("max_renewals = true", "max_renewals must be an integer, not True"),
        ("admin_auth_rate = true", "admin_auth_rate must be a number, not True"),
        ("revocation_staleness_bound = false", "must be a number, not False"),
        ("heartbeat_required = 1", "heartbeat_required must be true or false, not 1"),
        ('host = ["a"]', "host must be a string"),
        ("critical_scopes = [1]", "critical_scopes must be a list of strings"),
    ],
)
def test_a_number_of_the_wrong_type_in_the_file_is_refused(
    body: str, said: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=re.escape(said)):
        _load(body + "\n", tmp_path)


def test_an_integer_is_a_float_setting_and_text_reads_as_the_type(tmp_path: Path) -> None:
    config = _load("admin_auth_rate = 7\nmax_ttl = 7200\n", tmp_path)
    assert config.admin_auth_rate == 7.0 and type(config.admin_auth_rate) is float
    assert config.max_ttl == 7200
    env = _load(TASKLEASE_MAX_TTL="7200", TASKLEASE_ADMIN_AUTH_RATE="2.5", TASKLEASE_CONSOLE="off")
    assert (env.max_ttl, env.admin_auth_rate, env.console) == (7200, 2.5, False)


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("TASKLEASE_MAX_TTL", "3600.99", "max_ttl must be an integer, not '3600.99'"),
        ("TASKLEASE_ADMIN_AUTH_RATE", "true", "admin_auth_rate must be a number, not 'true'"),
        (
            "TASKLEASE_HEARTBEAT_REQUIRED",
            "maybe",
            "heartbeat_required must be true or false, not 'maybe'",
        ),
    ],
)
def test_text_of_the_wrong_type_in_the_environment_is_refused(
    name: str, value: str, said: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{name}: {said}")):
        _load(**{name: value})


# --- sizes and ranges, through the loader ------------------------------------------------


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"TASKLEASE_MAX_BODY_BYTES": "-5"}, "max_body_bytes must be between 32768"),
        ({"TASKLEASE_MAX_TOKEN_BYTES": "300"}, "max_token_bytes must be between"),
        ({"TASKLEASE_CRITICAL_SCOPES": "write:payments"}, "critical_scopes: 'write:payments'"),
        ({"TASKLEASE_MAX_TTL": str(10 * 365 * 86400)}, "max_ttl must be between 1 and"),
    ],
)
def test_values_out_of_range_are_refused_by_the_loader(env: dict[str, str], said: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(said)):
        _load(**env)


def test_the_password_of_a_public_url_is_never_repeated() -> None:
    with pytest.raises(ConfigError) as caught:
        _load(TASKLEASE_PUBLIC_URL="https://jdoe:S3cretPW@broker.example.com/x")
    assert "S3cretPW" not in str(caught.value) and "jdoe" not in str(caught.value)
    assert "'https://***@broker.example.com/x' must be an origin" in str(caught.value)


# --- the admin secret --------------------------------------------------------------------


def _placeholders() -> list[str]:
    """The admin secrets the deployment examples show, read from the files themselves."""
    example = (ROOT / "deploy" / "env.example").read_text()
    kubernetes = (ROOT / "deploy" / "kubernetes" / "secret.example.yaml").read_text()
    found = re.findall(r"^TASKLEASE_ADMIN_SECRET=(.+)$", example, re.M)
    found += re.findall(r'^\s*admin-secret: "(.+)"$', kubernetes, re.M)
    assert len(found) == 2, found
    return found


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("a" * 16, "shorter than 24 characters (16)"),
        ("x7" * 20, "fewer than 8 distinct characters (2)"),
        ("abcdefg" * 5, "fewer than 8 distinct characters (7)"),
        *((p, "the placeholder of an example") for p in _placeholders()),
        ("Change_Me_0123456789abcdefghij", "the placeholder of an example"),
    ],
)
def test_a_weak_admin_secret_is_refused(secret: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(TASKLEASE_ADMIN_SECRET=secret)
    said = str(caught.value)
    assert said.startswith("TASKLEASE_ADMIN_SECRET is too weak to be the admin secret: ")
    assert why in said and secret not in said


def test_the_secrets_we_make_and_use_meet_the_rule() -> None:
    """`init` (and `make run`), BrokerForTests, the e2e brokers, the bench and the tests'
    own secrets given as TASKLEASE_ADMIN_SECRET."""
    import secrets

    from tasklease.core.passwords import secret_weakness

    made = [new_secret() for _ in range(200)] + [secrets.token_urlsafe(32) for _ in range(200)]
    ours = [
        ADMIN_SECRET,
        STRONG,
        "bench-admin-secret-" + os.urandom(8).hex(),  # bench/servers.py
        "a-test-admin-secret-" + "x" * 16,  # tests/keystore
        "attestation-docs-admin-secret-0123456789",  # tests/attestation
        "cli-tests-admin-secret-0123456789",  # tests/cli
    ]
    assert [s for s in made + ours if secret_weakness(s) is not None] == []


def test_the_environments_secret_in_place_of_the_files_is_a_notice(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    stored = hash_secret(ADMIN_SECRET)
    file.write_text(f'admin_secret_hash = "{stored}"\n')
    notices: list[str] = []
    same = load_config(str(file), env={"TASKLEASE_ADMIN_SECRET": ADMIN_SECRET}, notices=notices)
    # The file's hash of the very secret is kept, not made again.
    assert notices == [] and same.admin_secret_hash == stored
    other = load_config(str(file), env={"TASKLEASE_ADMIN_SECRET": STRONG}, notices=notices)
    assert notices == [
        f"the admin secret is TASKLEASE_ADMIN_SECRET from the environment: the "
        f"admin_secret_hash of {file} is not used, and the secret it was made from no "
        "longer signs in"
    ]
    assert other.admin_secret_hash != same.admin_secret_hash
    assert STRONG not in notices[0] and ADMIN_SECRET not in notices[0]
    alone: list[str] = []
    load_config(os.devnull, env={"TASKLEASE_ADMIN_SECRET": STRONG}, notices=alone)
    assert alone == []


# --- whose file it is --------------------------------------------------------------------

# The file sets admin_secret_hash, trusted_proxies, tls_mode, key_provider, data_dir: who
# may write it is the broker's admin. Would fail if: the loader read a config file others
# can write, or one of another user, as it did (a `.tasklease/config.toml` planted in a
# shared directory where `tasklease serve` ran named the real data directory and the
# planter's admin secret).
_TAKEOVER = f'admin_secret_hash = "{hash_secret(STRONG)}"\ntrusted_proxies = ["0.0.0.0/0"]\n'


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o620])
def test_a_config_file_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    file = tmp_path / "config.toml"
    file.write_text(_TAKEOVER)
    file.chmod(mode)
    with pytest.raises(ConfigError, match=f"writable by group or others \\(mode {mode:04o}"):
        load_config(str(file), env={})


def test_a_config_file_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "config.toml"
    file.write_text(_TAKEOVER)
    file.chmod(0o644)
    if os.geteuid() == 0:
        os.chown(file, 65534, 65534)  # nobody's
    else:
        monkeypatch.setattr(os, "geteuid", lambda: file.stat().st_uid + 1)
    with pytest.raises(ConfigError, match="is owned by uid .*, not by this user"):
        load_config(str(file), env={})


def test_the_config_file_found_in_the_current_directory_is_held_to_it_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = tmp_path / ".tasklease"
    planted.mkdir()
    (planted / "config.toml").write_text(_TAKEOVER)
    (planted / "config.toml").chmod(0o666)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="writable by group or others"):
        load_config(None, env={})


def test_a_config_file_of_this_user_or_root_readable_by_all_is_read(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('trust_domain = "example.org"\n')
    file.chmod(0o644)
    assert load_config(str(file), env={}).trust_domain == "example.org"
    assert load_config(os.devnull, env={}).trust_domain == "tasklease.local"  # root's, 0666


# --- a real `tasklease serve` ------------------------------------------------------------


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    full.update(COLUMNS="300", NO_COLOR="1", TASKLEASE_METRICS_LISTEN="off")
    full.update(TASKLEASE_ADMIN_SECRET=STRONG, TASKLEASE_KEY_PROVIDER="plaintext")
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", "serve", "--data-dir", str(tmp_path / "d")]
        + ["--port", str(free_port()), *args],
        capture_output=True, text=True, env=full, cwd=str(tmp_path), timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"TASKLEASE_HEARTBEAT_REQUIRD": "true"},
            "error: TASKLEASE_HEARTBEAT_REQUIRD is not a setting (did you mean "
            "TASKLEASE_HEARTBEAT_REQUIRED?)",
        ),
        (
            {"TASKLEASE_ADMIN_SECRET": "change-me-to-at-least-16-characters"},
            "error: TASKLEASE_ADMIN_SECRET is too weak to be the admin secret: it is the "
            "placeholder of an example",
        ),
        ({"TASKLEASE_MAX_BODY_BYTES": "-5"}, "error: max_body_bytes must be between 32768"),
        ({"TASKLEASE_MAX_TOKEN_BYTES": "300"}, "error: max_token_bytes must be between"),
        (
            {"TASKLEASE_CRITICAL_SCOPES": "write:payments:acct-*"},
            "error: critical_scopes: 'write:payments:acct-*' is not a scope",
        ),
        (
            {"TASKLEASE_TLS_MODE": "tls", "TASKLEASE_TLS_CERT": "/nowhere.pem"}
            | {"TASKLEASE_TLS_KEY": "/nowhere.key"},
            "error: tls_cert /nowhere.pem and tls_key /nowhere.key do not load",
        ),
    ],
    ids=["misspelt", "placeholder-secret", "body-size", "token-size", "critical-scope", "tls"],
)
def test_serve_refuses_a_bad_configuration_with_exit_2(
    env: dict[str, str], said: str, tmp_path: Path
) -> None:
    done = _serve(tmp_path, **env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert " ".join(done.stderr.split()).startswith(said), done.stderr
    assert not (tmp_path / "d").exists() or env.get("TASKLEASE_TLS_MODE")  # nothing made


def test_serve_on_a_host_it_cannot_bind_names_the_host_not_the_port(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--host", "no-such-host.invalid")
    assert done.returncode == 2, (done.stdout, done.stderr)
    said = " ".join(done.stderr.split())
    assert "error: cannot listen on no-such-host.invalid:" in said
    assert "hint: pass --host (or set TASKLEASE_HOST)" in said and "--port" not in said


@pytest.mark.slow
def test_serve_says_when_the_environments_secret_replaces_the_files(tmp_path: Path) -> None:
    """`tasklease init` wrote a hash; TASKLEASE_ADMIN_SECRET (the CLI's credential too)
    replaces it: a warning at start-up says so, never quoting either secret."""
    data = tmp_path / "data"
    made = subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", "init", "--data-dir", str(data)]
        + ["--secret-file", str(data / "admin-secret"), "--key-provider", "plaintext"],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
        env={k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    from_init = (data / "admin-secret").read_text().strip()
    running = launch_broker(data)  # with TASKLEASE_ADMIN_SECRET=ADMIN_SECRET
    try:
        auth = f"{running.url}/v1/admin/auth"
        assert httpx.post(auth, json={"secret": ADMIN_SECRET}).status_code == 200
        assert httpx.post(auth, json={"secret": from_init}).status_code == 401
    finally:
        stop_broker(running)
    log = running.log()
    assert (
        "the admin secret is TASKLEASE_ADMIN_SECRET from the environment: the "
        f"admin_secret_hash of {data / 'config.toml'} is not used"
    ) in log
    assert ADMIN_SECRET not in log and from_init not in log


def test_a_file_owned_by_root_or_this_user_is_not_foreign(monkeypatch: pytest.MonkeyPatch) -> None:
    """Root may change any file anyway: a system-wide config (``/etc``) it owns is trusted
    like one of this user's; any other owner is foreign."""
    from tasklease.localfiles import foreign_owner

    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    def owned_by(uid: int) -> os.stat_result:
        return os.stat_result((0o100644, 0, 0, 1, uid, uid, 0, 0, 0, 0))

    assert not foreign_owner(owned_by(0))
    assert not foreign_owner(owned_by(1000))
    assert foreign_owner(owned_by(1001))
