"""The operator CLI as a subprocess against real brokers on loopback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cli_forks
import pytest
import typer
from cli_runner import CliRunner
from e2e_support import free_port

from tasklease.cli._common import EXIT_REFUSED, broker_errors, exit_code_for
from tasklease.cli.main import app
from tasklease.client import Agent, Forbidden, NotFound, TransportError
from tasklease.client.testing import BrokerForTests
from tasklease.core.keys import load_or_create_keyring
from tasklease.keystore import PlaintextKeyProvider, write_private_file

SCOPE = ["read:data:*"]
_SECRET = "cli-tests-admin-secret-0123456789"  # as strong as load_config asks


_RUNNER = CliRunner()


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerForTests]:
    with BrokerForTests() as running:
        yield running


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def run(
    *args: str,
    broker: BrokerForTests | None = None,
    home: Path,
    secret: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "COLUMNS": "200"})
    if broker is not None:
        env["TASKLEASE_URL"] = broker.url
        env["TASKLEASE_ADMIN_SECRET"] = secret or broker.admin_secret
    env.update(extra_env or {})
    if args and args[0] == "serve":  # a server of its own, as a user starts one
        return cli_forks.run(args, env=env, timeout=60)  # forked: cli_forks
    # Everything else through the same entry point in this process, none of its own
    # ``TASKLEASE_`` settings: a process costs half a second of start, and these are many.
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TASKLEASE_")}
    result = _RUNNER.invoke(app, list(args), env={**unset, **env}, catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_status(broker: BrokerForTests, home: Path) -> None:
    result = run("status", "--json", broker=broker, home=home)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["status"] == "ok" and status["version"] and status["signing_kid"]
    table = run("status", broker=broker, home=home)
    assert table.returncode == 0 and "signing_kid" in table.stdout


def test_app_commands(broker: BrokerForTests, home: Path) -> None:
    made = run(
        "app",
        "register",
        "billing-bot",
        "--scope",
        "read:bills:*",
        "--json",
        broker=broker,
        home=home,
    )
    assert made.returncode == 0, made.stderr
    app = json.loads(made.stdout)
    assert app["client_secret"] and app["scopes"] == ["read:bills:*"]
    app_id = str(app["app_id"])

    listed = run("app", "list", "--json", broker=broker, home=home)
    assert app_id in [a["app_id"] for a in lines(listed.stdout)]
    assert "billing-bot" in run("app", "list", broker=broker, home=home).stdout

    shown = json.loads(run("app", "show", app_id, "--json", broker=broker, home=home).stdout)
    assert shown["name"] == "billing-bot" and "client_secret" not in shown

    updated = run("app", "update", app_id, "--token-ttl", "600", "--json", broker=broker, home=home)
    assert json.loads(updated.stdout)["token_ttl"] == 600

    removed = run("app", "remove", app_id, "--json", broker=broker, home=home)
    assert json.loads(removed.stdout)["status"] == "inactive"

    missing = run("app", "show", "app-nothing-000000", broker=broker, home=home)
    assert missing.returncode == 1
    assert "app not found" in missing.stderr and "Traceback" not in missing.stderr

    dup = run("app", "register", "dup-app", "--scope", "read:x:*", broker=broker, home=home)
    again = run("app", "register", "dup-app", "--scope", "read:x:*", broker=broker, home=home)
    assert dup.returncode == 0 and again.returncode == 3
    assert "conflict" in again.stderr


def test_launch_token_revoke_and_audit(broker: BrokerForTests, home: Path) -> None:
    made = run(
        "launch-token",
        "create",
        "--agent-name",
        "cli-agent",
        "--scope",
        "read:data:*",
        "--json",
        broker=broker,
        home=home,
    )
    assert made.returncode == 0, made.stderr
    launch = json.loads(made.stdout)["launch_token"]
    with Agent.register(broker.url, launch, "orch-cli", "task-cli", SCOPE) as agent:
        revoked = run(
            "revoke",
            "--level",
            "agent",
            "--target",
            agent.agent_id,
            "--json",
            broker=broker,
            home=home,
        )
        assert revoked.returncode == 0, revoked.stderr
        assert json.loads(revoked.stdout)["level"] == "agent"
        assert broker.admin().validate_token(agent.token)["valid"] is False

    events = run("audit", "events", "--task-id", "task-cli", "--json", broker=broker, home=home)
    assert events.returncode == 0, events.stderr
    types = [e["event_type"] for e in lines(events.stdout)]
    assert "agent_registered" in types and "token_issued" in types
    table = run("audit", "events", "--event-type", "agent_registered", broker=broker, home=home)
    assert table.returncode == 0 and "agent_registered" in table.stdout

    bad = run("revoke", "--level", "everything", "--target", "x", broker=broker, home=home)
    assert bad.returncode == 2


def test_audit_export_and_verify_over_http(broker: BrokerForTests, home: Path) -> None:
    out_file = home / "audit.jsonl"
    exported = run("audit", "export", "--output", str(out_file), broker=broker, home=home)
    assert exported.returncode == 0, exported.stderr
    events = lines(out_file.read_text())
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    to_stdout = run("audit", "export", "--event-type", "admin_auth", broker=broker, home=home)
    assert {e["event_type"] for e in lines(to_stdout.stdout)} == {"admin_auth"}

    verified = run("audit", "verify", "--url", broker.url, broker=broker, home=home)
    assert verified.returncode == 0, verified.stderr
    assert "audit chain intact" in verified.stdout


def test_audit_export_from_the_database_with_a_broker_url_in_the_environment(
    broker: BrokerForTests, home: Path
) -> None:
    # TASKLEASE_URL (as an operator's shell has it) is where a remote command goes, not a
    # --url given beside --data-dir: the database is read, as `audit verify` reads it.
    assert broker.data_dir is not None
    local = run("audit", "export", "--data-dir", str(broker.data_dir), broker=broker, home=home)
    assert local.returncode == 0, local.stderr
    assert [e["seq"] for e in lines(local.stdout)][:1] == [1]
    both = run(
        "audit", "export", "--data-dir", str(broker.data_dir), "--url", broker.url,
        broker=broker, home=home,
    )  # fmt: skip
    assert both.returncode == 2 and "not both" in both.stderr


def test_audit_verify_names_the_edited_event(tmp_path: Path, home: Path) -> None:
    data = tmp_path / "data"
    with BrokerForTests(data_dir=data) as running:
        with running.agent(SCOPE):
            pass
        secret = running.admin_secret
    database = data / "tasklease.db"
    intact = run("audit", "verify", "--database", str(database), home=home)
    assert intact.returncode == 0, intact.stderr
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE audit_events SET detail = 'nothing to see' WHERE seq = 3")
    broken = run("audit", "verify", "--database", str(database), home=home)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "evt-000003" in broken.stderr, broken.stderr
    with BrokerForTests(data_dir=data, admin_secret=secret) as again:
        over_http = run("audit", "verify", "--url", again.url, broker=again, home=home)
    assert over_http.returncode == 1, over_http.stdout + over_http.stderr
    assert "evt-000003" in over_http.stderr and "Traceback" not in over_http.stderr


def test_token_inspect_shows_the_chain(broker: BrokerForTests, home: Path) -> None:
    with (
        broker.agent(SCOPE, task_id="inspect-root") as root,
        broker.agent(SCOPE, task_id="inspect-child") as child,
    ):
        token = root.delegate(child.agent_id, ["read:data:9"]).token
        shown = run("token", "inspect", token, broker=broker, home=home)
        assert shown.returncode == 0, shown.stderr
        assert "delegation chain" in shown.stdout
        assert root.agent_id in shown.stdout and child.agent_id in shown.stdout
        assert "expires in" in shown.stdout and "valid (kid" in shown.stdout
        as_json = json.loads(
            run("token", "inspect", token, "--json", broker=broker, home=home).stdout
        )
        assert as_json["signature_valid"] is True and as_json["broker_valid"] is True
        assert as_json["claims"]["delegation_chain"][0]["agent"] == root.agent_id

        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        bad = run("token", "inspect", forged, broker=broker, home=home)
        assert bad.returncode == 1
        garbage = run("token", "inspect", "not-a-token", "--offline", home=home)
        assert garbage.returncode == 1 and "not a compact JWS" in garbage.stderr


def test_keys_rotate(tmp_path: Path, home: Path) -> None:
    with BrokerForTests(data_dir=tmp_path / "keys-broker") as running:
        old_agent = running.agent(SCOPE, task_id="before-rotation")
        old_kid = running.admin().health()["signing_kid"]
        rotated = run("keys", "rotate", "--json", broker=running, home=home)
        assert rotated.returncode == 0, rotated.stderr
        answer = json.loads(rotated.stdout)
        assert answer["previous_kid"] == old_kid and answer["kid"] != old_kid
        jwks = running.admin().jwks()
        assert [k["kid"] for k in jwks["keys"]] == [answer["kid"], old_kid]
        assert running.admin().validate_token(old_agent.token)["valid"] is True
        with running.agent(SCOPE, task_id="after-rotation") as new_agent:
            inspected = json.loads(
                run("token", "inspect", new_agent.token, "--json", broker=running, home=home).stdout
            )
            assert inspected["header"]["kid"] == answer["kid"]
        old_agent.renew()  # a token signed by the old key still authenticates
        old_agent.close()


def test_keys_list_and_retire(tmp_path: Path, home: Path) -> None:
    """After a compromise: rotate, then retire the key that signed before; nothing it
    signed authenticates any more, and the active key is not retired."""
    with BrokerForTests(data_dir=tmp_path / "retire-broker") as running:
        old_agent = running.agent(SCOPE, task_id="before-retirement")
        rotated = json.loads(run("keys", "rotate", "--json", broker=running, home=home).stdout)
        new_kid, old_kid = rotated["kid"], rotated["previous_kid"]
        listed = run("keys", "list", broker=running, home=home)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines() == [
            f"{new_kid}  active: signs new tokens",
            f"{old_kid}  verifies what it signed",
        ]
        active = run("keys", "retire", new_kid, broker=running, home=home)
        assert active.returncode == 3 and "rotate first" in active.stderr
        retired = run("keys", "retire", old_kid, broker=running, home=home)
        assert retired.returncode == 0, retired.stderr
        assert f"signing key {old_kid} retired" in retired.stdout
        assert json.loads(run("keys", "list", "--json", broker=running, home=home).stdout) == {
            "kids": [new_kid]
        }
        assert running.admin().validate_token(old_agent.token)["valid"] is False
        gone = run("keys", "retire", old_kid, broker=running, home=home)
        assert gone.returncode == 1 and "no signing key has this kid" in gone.stderr
        old_agent.close()


def test_a_kid_beginning_with_a_hyphen_is_the_kid_not_an_option(home: Path) -> None:
    """A kid is base64url, and one in 64 begins with "-": copied from `keys list`, it is
    retired as it is (here: asked of an unreachable broker), never refused as an option."""
    kid = "-d7yfecFHmEQB779Bsk8CBCyfYH4h2OzqU-PYJJHIbg"
    env = {"TASKLEASE_URL": "http://127.0.0.1:9", "TASKLEASE_ADMIN_SECRET": "s" * 32}
    answer = run("keys", "retire", kid, home=home, extra_env=env)
    assert answer.returncode == 4 and "cannot reach" in answer.stderr, answer.stderr
    both = run("keys", "retire", "--json", kid, home=home, extra_env=env)
    assert both.returncode == 4 and "cannot reach" in both.stderr, both.stderr


def test_refused_and_unreachable(broker: BrokerForTests, home: Path) -> None:
    wrong = run("app", "list", broker=broker, home=home, secret="not-the-secret-at-all")
    assert wrong.returncode == 3
    assert "invalid credentials" in wrong.stderr and "Traceback" not in wrong.stderr

    down = run("status", home=home, extra_env={"TASKLEASE_URL": "http://127.0.0.1:9"})
    assert down.returncode == 4 and "cannot reach" in down.stderr
    no_url = run("app", "list", home=home)
    assert no_url.returncode == 2 and "no broker URL" in no_url.stderr


def test_forbidden_maps_to_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    # Admin tokens carry every admin scope, so no CLI command can draw a 403 from a real
    # broker: check the mapping itself.
    error = Forbidden("not allowed here", code="insufficient_scope", status=403, hint="ask")
    assert exit_code_for(error) == EXIT_REFUSED
    assert exit_code_for(NotFound("gone", status=404)) == 1
    assert exit_code_for(TransportError("down")) == 4
    with pytest.raises(typer.Exit) as info, broker_errors():
        raise error
    assert info.value.exit_code == EXIT_REFUSED
    printed = capsys.readouterr().err
    assert "not allowed here" in printed and "hint: ask" in printed


def test_profile_file(broker: BrokerForTests, home: Path) -> None:
    profile = home / ".config" / "tasklease" / "profile.toml"
    profile.parent.mkdir(parents=True)
    profile.write_text(f'url = "{broker.url}"\nadmin_secret = "{broker.admin_secret}"\n')
    profile.chmod(0o644)
    unsafe = run("app", "list", home=home)
    assert unsafe.returncode == 2 and "chmod 600" in unsafe.stderr
    profile.chmod(0o600)
    assert run("app", "list", "--json", home=home).returncode == 0
    elsewhere = home / "other.toml"
    assert run("status", "--profile", str(elsewhere), home=home).returncode == 2


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://127.0.0.1:port/", "https://[bad]:1/", "http://"]
)
def test_a_malformed_broker_url_is_a_usage_error(url: str, home: Path) -> None:
    """A mistyped --url is the user's to fix: one error line naming it, exit 2, never the
    SDK's InvalidURL and its traceback."""
    secret = {"TASKLEASE_ADMIN_SECRET": _SECRET}
    for command in (["status"], ["app", "list"], ["login"]):
        result = run(*command, "--url", url, home=home, extra_env=secret)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("error: broker URL"), result.stderr
        assert url in result.stderr


_NOT_TEXT = b"\xff\xfe not a database, not text " * 10
_NOWHERE = "http://127.0.0.1:9"  # never reached: the bad file is found first
# A well-formed log verifier key (of no log): --log-key values are read when parsed.
A_LOG_KEY = "test.example/log+e601e8b4+AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["audit", "verify", "--database", "{bin}"], "{bin} is not a tasklease database"),
        (["init", "--data-dir", "{bin}"], "data directory {bin} exists and is not a directory"),
        (["db", "migrate", "--data-dir", "{bin}"], "{bin} is not a directory"),
        (
            ["serve", "--data-dir", "{bin}", "--port", "{port}"],
            "data directory {bin} exists and is not a directory",
        ),
        (
            ["serve", "--data-dir", "{home}/data", "--port", "{port}"],
            "{home}/data/tasklease.db is not a tasklease database",
        ),
        (
            ["audit", "prove", "1", "--checkpoint", "{bin}", "--url", _NOWHERE],
            "checkpoint {bin} is not UTF-8 text",
        ),
        (
            ["audit", "verify", "--checkpoint", "{bin}", "--url", _NOWHERE],
            "checkpoint {bin} is not UTF-8 text",
        ),
        (
            ["audit", "prove", "--bundle", "{bin}", "--log-key", A_LOG_KEY],
            "{bin} is not UTF-8 text",
        ),
        (
            ["app", "register", "x", "-s", "read:a:b", "--public-key", "{bin}", "--url", _NOWHERE],
            "public key {bin} is not text",
        ),
        (
            ["audit", "export", "-o", "{home}/no/such/dir/x.jsonl", "--url", _NOWHERE],
            "cannot write {home}/no/such/dir/x.jsonl: No such file or directory",
        ),
    ],
    ids=[
        "verify-not-a-database",
        "init-data-dir-is-a-file",
        "migrate-data-dir-is-a-file",
        "serve-data-dir-is-a-file",
        "serve-not-a-database",
        "prove-binary-checkpoint",
        "verify-binary-checkpoint",
        "prove-binary-bundle",
        "app-binary-public-key",
        "export-to-a-missing-directory",
    ],
)
def test_a_bad_local_file_is_one_error_line_and_exit_2(
    args: list[str], said: str, home: Path
) -> None:
    """A wrong file or directory handed to the CLI is a usage or configuration error
    (docs/cli.md: exit 2) told in one line naming it, never a traceback."""
    binary = home / "bad.bin"
    binary.write_bytes(_NOT_TEXT)
    (home / "data").mkdir()
    (home / "data" / "tasklease.db").write_bytes(_NOT_TEXT)
    # The rest of a broker's state, so that serve gets as far as the database.
    load_or_create_keyring(home / "data" / "keys", PlaintextKeyProvider())
    write_private_file(home / "data" / "keys" / "nonce.secret", b"n" * 32)
    port = free_port()  # only a broker that starts would bind it
    where = {"bin": str(binary), "home": str(home), "port": str(port)}
    env = {"TASKLEASE_ADMIN_SECRET": _SECRET, "TASKLEASE_KEY_PROVIDER": "plaintext"}
    result = run(*[a.format(**where) for a in args], home=home, extra_env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and said.format(**where) in result.stderr, (
        result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_checkpoint_that_cannot_be_written_is_one_error_line(
    broker: BrokerForTests, home: Path
) -> None:
    # A checkpoint to write: the broker publishes its first one within an interval of
    # its start (10 s), however fast the tests before this one ran.
    deadline = time.monotonic() + 30
    while True:
        try:
            broker.admin().audit_checkpoint()
            break
        except NotFound:
            assert time.monotonic() < deadline, "no checkpoint published"
            time.sleep(0.2)
    target = home / "no" / "such" / "dir" / "checkpoint"
    result = run("audit", "checkpoint", "-o", str(target), broker=broker, home=home)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert f"cannot write {target}: No such file or directory" in result.stderr


@pytest.mark.parametrize("kind", ["empty", "comments", "pipe"])
def test_policy_validate_reads_a_file_as_the_broker_does(kind: str, home: Path) -> None:
    """A file named on the command line is read by the broker's rule: one holding no
    policy, or a pipe (which waited for a writer for ever), is refused, not validated."""
    path = home / "cap.cedar"
    if kind == "pipe":
        os.mkfifo(path)
    else:
        path.write_text("" if kind == "empty" else "// being rewritten\n")
    result = run("policy", "validate", str(path), home=home)
    assert result.returncode != 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    said = "not a regular file" if kind == "pipe" else "holds no policy"
    assert said in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("condition", "said"),
    [
        ("(" * 800 + "context.within_ceiling" + ")" * 800, "nested too deeply"),
        ("context.depth" + " + 1" * 500 + " > 0", "a policy has too many operators"),
    ],
    ids=["parentheses", "operators"],
)
def test_policy_validate_refuses_a_policy_nested_too_deeply(
    condition: str, said: str, home: Path
) -> None:
    """What would crash Cedar's parser, or the reading of its JSON form, is a refusal
    naming the file (exit 1), as ``policy validate`` refuses any set the broker would."""
    deep = home / "deep.cedar"
    deep.write_text(f'@id("deep")\npermit (principal, action, resource) when {{ {condition} }};')
    result = run("policy", "validate", str(deep), home=home)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.startswith("refused: ") and f"deep.cedar: {said}" in result.stdout
