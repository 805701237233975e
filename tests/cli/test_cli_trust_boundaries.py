"""Decision 147: the CLI as a subprocess against a real broker on loopback, where it
meets what it must not trust. A cached session never acts for another operator than the
one named; credentials never go over plain HTTP beyond loopback unless asked; text from
files, flags and brokers is shown as written, never taken as Rich markup; a file it
writes is new, 0600 and never written through a link."""

from __future__ import annotations

import ast
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cli_forks
import pytest

from tasklease.client import AdminClient, NotFound
from tasklease.client.testing import BrokerForTests

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerForTests]:
    with BrokerForTests(audit_checkpoint_interval=0.2) as running:
        yield running


def cli(
    *args: str,
    home: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    typed: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The real ``tasklease`` (this source tree) with only the TASKLEASE_* variables given
    and umask 022, as a shell usually has it; ``typed``: what the user types at a prompt
    (read from stdin: the child has no terminal)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    full.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "COLUMNS": "200"})
    full.update(env or {})
    return cli_forks.run(  # a process forked from one that made the CLI's imports
        args,
        env=full,
        timeout=timeout,
        umask=0o022,
        input=typed,
        start_new_session=True,  # no controlling terminal: getpass reads stdin
    )


def _as_admin(broker: BrokerForTests) -> dict[str, str]:
    return {"TASKLEASE_URL": broker.url, "TASKLEASE_ADMIN_SECRET": broker.admin_secret}


def _operator(broker: BrokerForTests, name: str, role: str) -> dict[str, str]:
    made = broker.admin().add_operator(name, role)
    return {
        "TASKLEASE_URL": broker.url,
        "TASKLEASE_OPERATOR": name,
        "TASKLEASE_OPERATOR_SECRET": str(made["secret"]),
    }


def _details(admin: AdminClient, event_type: str) -> list[str]:
    events = admin.audit_events(event_type=event_type, limit=1000)["events"]
    return [str(e["detail"]) for e in events]


# -- D6: a cached session stands in only for the operator named -------------------------


def test_login_under_umask_000_makes_its_configuration_directories_0700(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    """The directories `login` makes on the way to its session (``~/.config/tasklease``)
    are 0700 like ``sessions/``: under umask 000 they were 0777, and another user could
    put a ``sessions/`` or ``profile.toml`` of theirs there."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    full.update({"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg" / "x")})
    logged = cli_forks.run(["login"], env={**full, **_as_admin(broker)}, timeout=60, umask=0)
    assert logged.returncode == 0, logged.stderr
    for directory in ("cfg", "cfg/x", "cfg/x/tasklease", "cfg/x/tasklease/sessions"):
        assert stat.S_IMODE((tmp_path / directory).stat().st_mode) == 0o700, directory


def test_after_an_admin_login_the_operator_named_acts_and_the_audit_log_says_so(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    admin = broker.admin()  # one client: its own sign-in is not counted twice
    auditor = _operator(broker, "cli-auditor", "auditor")
    ops = _operator(broker, "cli-ops", "operator")
    assert cli("login", home=tmp_path, env=_as_admin(broker)).returncode == 0

    # The auditor may not register apps: with the admin's session cached, still refused.
    refused = cli("app", "register", "aud-app", "-s", "read:x:y", home=tmp_path, env=auditor)
    assert refused.returncode == 3, (refused.stdout, refused.stderr)
    assert "insufficient_scope" in refused.stderr
    assert not any("app=aud-app " in d for d in _details(admin, "app_registered"))

    # An operator who may: the event names that operator, not the admin who logged in.
    made = cli("app", "register", "ops-app", "-s", "read:x:y", "--json", home=tmp_path, env=ops)
    assert made.returncode == 0, made.stderr
    (detail,) = [d for d in _details(admin, "app_registered") if "app=ops-app " in d]
    assert "by=operator:cli-ops" in detail, detail

    # The admin's session still serves whoever names no one, and the admin secret itself.
    url_only = {"TASKLEASE_URL": broker.url}
    signed_in = len(_details(admin, "admin_auth"))
    assert cli("app", "list", "--json", home=tmp_path, env=url_only).returncode == 0
    assert cli("app", "list", "--json", home=tmp_path, env=_as_admin(broker)).returncode == 0
    assert len(_details(admin, "admin_auth")) == signed_in  # no new sign-in: the session


def test_an_operator_named_without_its_secret_uses_its_own_session_only(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    admin = broker.admin()
    ops = _operator(broker, "cli-named", "operator")
    url_only = {"TASKLEASE_URL": broker.url}
    name_only = {**url_only, "TASKLEASE_OPERATOR": "cli-named"}
    assert cli("login", home=tmp_path, env=_as_admin(broker)).returncode == 0
    # The admin's session is not this operator's: it needs its own credential.
    without = cli("app", "list", home=tmp_path, env=name_only)
    assert without.returncode == 2 and "no secret or key for operator cli-named" in without.stderr

    # `login --operator NAME` asks for that operator's secret.
    typed = ops["TASKLEASE_OPERATOR_SECRET"] + "\n"
    logged = cli("login", "--operator", "cli-named", home=tmp_path, env=url_only, typed=typed)
    assert logged.returncode == 0, logged.stderr
    assert "as cli-named for" in logged.stdout
    signed_in = len(_details(admin, "operator_authenticated"))
    listed = cli("app", "list", "--json", home=tmp_path, env=name_only)
    assert listed.returncode == 0, listed.stderr
    assert len(_details(admin, "operator_authenticated")) == signed_in  # its session


# -- D10: no credential over plain HTTP beyond loopback unless asked ---------------------


def _beyond_loopback() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent (UDP)
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A TCP listener on every interface, and an http:// URL that reaches it beyond
    loopback (TEST-NET-1, unroutable, when this machine has no such address)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("0.0.0.0", 0))
    server.listen(4)
    server.setblocking(False)
    host = _beyond_loopback() or "192.0.2.1"
    try:
        yield server, f"http://{host}:{server.getsockname()[1]}"
    finally:
        server.close()


def _connections(server: socket.socket) -> list[bytes]:
    """What the clients that connected sent (their first bytes)."""
    seen = []
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return seen
        with conn:
            conn.settimeout(5)
            try:
                seen.append(conn.recv(65536))
            except OSError:
                seen.append(b"")


@pytest.mark.parametrize(
    "command", [["app", "list"], ["status"], ["login"], ["audit", "verify", "--url", "{url}"]]
)
def test_plain_http_beyond_loopback_is_refused_before_any_connection(
    command: list[str], listener: tuple[socket.socket, str], tmp_path: Path
) -> None:
    server, url = listener
    secret = "this-is-the-admin-secret-0123456789"
    args = [a.replace("{url}", url) for a in command]
    env = {"TASKLEASE_URL": url, "TASKLEASE_ADMIN_SECRET": secret}
    refused = cli(*args, home=tmp_path, env=env, timeout=30)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert refused.stderr.startswith(f"error: broker URL {url} is plain HTTP"), refused.stderr
    assert "--insecure-http" in refused.stderr and "Traceback" not in refused.stderr
    assert _connections(server) == []  # nothing reached the wire


@pytest.mark.parametrize(
    "opt_in", [(["--insecure-http"], {}), ([], {"TASKLEASE_INSECURE_HTTP": "1"})]
)
def test_insecure_http_is_an_explicit_opt_in_and_says_so(
    opt_in: tuple[list[str], dict[str, str]],
    listener: tuple[socket.socket, str],
    tmp_path: Path,
) -> None:
    server, url = listener
    if url.startswith("http://192.0.2.1:"):
        pytest.skip("this machine has no address beyond loopback to listen on")
    flags, variables = opt_in
    env = {"TASKLEASE_URL": url, "TASKLEASE_ADMIN_SECRET": "s" * 32, **variables}
    server.setblocking(True)
    server.settimeout(20)
    child = subprocess.Popen(
        [sys.executable, "-m", "tasklease.cli.main", *flags, "app", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")},
            "HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path / ".config"),
            **env,
        },
    )
    try:
        conn, _ = server.accept()  # it did connect: the user asked for it
        conn.close()
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait()
    assert f"warning: credentials go to {url} over plain HTTP" in stderr, stderr
    assert "InsecureHTTPWarning" not in stderr  # said once, by the CLI, not again by the SDK


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_over_plain_http_needs_no_opt_in(
    host: str, broker: BrokerForTests, tmp_path: Path
) -> None:
    url = broker.url.replace("127.0.0.1", host)
    listed = cli(
        "app", "list", "--json", home=tmp_path, env={**_as_admin(broker), "TASKLEASE_URL": url}
    )
    assert listed.returncode == 0, listed.stderr
    assert "warning" not in listed.stderr


# -- D14: text is data, never Rich markup --------------------------------------------------

_MARKUP = "[/x]d[conceal]hidden[bold]"


def test_a_path_holding_markup_is_printed_as_written(tmp_path: Path) -> None:
    data_dir = tmp_path / _MARKUP
    # No broker there (only `init` makes one): the refusal names the path as written.
    migrated = cli("db", "migrate", "--data-dir", str(data_dir), home=tmp_path)
    assert migrated.returncode == 2, (migrated.stdout, migrated.stderr)
    assert "Traceback" not in migrated.stderr
    assert f"error: database {data_dir}/tasklease.db does not exist" in migrated.stderr


def test_an_error_holding_markup_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / f"{_MARKUP}.toml"
    refused = cli("serve", "--config", str(config), "--port", "0", home=tmp_path)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
    assert str(config) in refused.stderr  # every character shown, none taken as a tag


def test_a_broker_answer_holding_markup_is_shown_as_written(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    env = _as_admin(broker)
    for target in (f"task-{_MARKUP}", "task-[conceal]hidden[bold]"):
        revoked = cli("revoke", "--level", "task", "--target", target, home=tmp_path, env=env)
        assert revoked.returncode == 0, revoked.stderr
        assert f"revoked task {target} (1 entry written)" in revoked.stdout
    # (A task id holding "/" is not a path segment the API serves: no slash here.)
    shown = cli("task", "show", "task-[conceal]hidden[bold]", home=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "  task task-[conceal]hidden[bold]" in shown.stdout
    assert "--task-id task-[conceal]hidden[bold]" in shown.stdout


def test_the_cli_prints_through_two_consoles_that_take_no_markup_by_default() -> None:
    """One place decides: every Console of the CLI is _common's, built with markup off
    (and escaping terminal controls: ``_Screen``), so a call that styles text opts in
    (markup=True) and escapes what it interpolates."""
    from tasklease.cli import _common

    assert _common.out._markup is False and _common.err._markup is False
    assert isinstance(_common.out, _common._Screen) and isinstance(_common.err, _common._Screen)
    built = []
    for path in sorted((ROOT / "src" / "tasklease" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                "Console",
                "_Screen",
            ):
                built.append(f"{path.name}:{node.lineno}")
    assert built and all(site.startswith("_common.py:") for site in built), built


# -- D16: a file the CLI writes is new, 0600, never written through a link ---------------


def test_audit_export_writes_a_new_private_file(broker: BrokerForTests, tmp_path: Path) -> None:
    exported = tmp_path / "audit.jsonl"
    first = cli("audit", "export", "-o", str(exported), home=tmp_path, env=_as_admin(broker))
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600  # under umask 022
    assert json.loads(exported.read_text().splitlines()[0])["seq"] == 1

    exported.write_text("kept\n")
    again = cli("audit", "export", "-o", str(exported), home=tmp_path, env=_as_admin(broker))
    assert again.returncode == 2, (again.stdout, again.stderr)
    assert f"error: {exported} already exists" in again.stderr and "--force" in again.stderr
    assert exported.read_text() == "kept\n"

    exported.chmod(0o644)
    forced = cli(
        "audit", "export", "-o", str(exported), "--force", home=tmp_path, env=_as_admin(broker)
    )
    assert forced.returncode == 0, forced.stderr
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600 and exported.read_text() != "kept\n"


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_audit_export_never_writes_through_a_link(
    force: list[str], broker: BrokerForTests, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(victim)
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "created-through-the-link")
    for path in (link, dangling):
        refused = cli(
            "audit", "export", "-o", str(path), *force, home=tmp_path, env=_as_admin(broker)
        )
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        assert f"error: {path} is a symbolic link" in refused.stderr
    assert victim.read_text() == "precious\n" and link.is_symlink()
    assert not (tmp_path / "created-through-the-link").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_checkpoint_and_proof_bundle_files_are_new_and_private(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    env = _as_admin(broker)
    admin = broker.admin()
    deadline = time.monotonic() + 40
    while True:  # the broker's checkpoint job runs every 0.2 s
        try:
            admin.audit_checkpoint()
            break
        except NotFound:
            assert time.monotonic() < deadline, "no checkpoint within 40 s"
            time.sleep(0.1)
    checkpoint, bundle = tmp_path / "checkpoint.txt", tmp_path / "proof.json"
    for path, args in ((checkpoint, ["checkpoint"]), (bundle, ["prove", "1"])):
        path.write_text("kept\n")
        kept = cli("audit", *args, "-o", str(path), home=tmp_path, env=env)
        assert kept.returncode == 2 and f"{path} already exists" in kept.stderr, kept.stderr
        assert path.read_text() == "kept\n"
        replaced = cli("audit", *args, "-o", str(path), "--force", home=tmp_path, env=env)
        assert replaced.returncode == 0, replaced.stderr
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() != "kept\n"


def test_the_environments_admin_secret_wins_over_the_profiles_operator(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    """Flags and environment win over the profile, also when the profile gives the URL."""
    auditor = _operator(broker, "cli-profiled", "auditor")
    profile = tmp_path / ".config" / "tasklease" / "profile.toml"
    profile.parent.mkdir(parents=True)
    profile.write_text(
        f'url = "{broker.url}"\noperator = "cli-profiled"\n'
        f'operator_secret = "{auditor["TASKLEASE_OPERATOR_SECRET"]}"\n'
    )
    profile.chmod(0o600)
    as_profiled = cli("app", "register", "prof-one", "-s", "read:x:y", home=tmp_path)
    assert as_profiled.returncode == 3, as_profiled.stderr  # the auditor, from the profile
    secret = {"TASKLEASE_ADMIN_SECRET": broker.admin_secret}
    as_admin = cli("app", "register", "prof-two", "-s", "read:x:y", home=tmp_path, env=secret)
    assert as_admin.returncode == 0, as_admin.stderr
