"""``tasklease federation`` against a real broker process: add (an endpoint over HTTPS with
a test CA, then a static bundle), list, show, remove; the broker's own refresher picks up
a rotation in the peer on the peer's refresh hint."""

from __future__ import annotations

import json
import os
import re
import shlex
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bundle_support import make_ca, wait_for
from e2e_support import RunningBroker, run_cli

from tasklease.client.testing import BrokerForTests

pytestmark = pytest.mark.slow

PEER = "b.example"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    cert, key = ca.server("127.0.0.1")
    return ca.path, cert, key


@pytest.fixture
def peer(pki: tuple[Path, Path, Path]) -> Iterator[BrokerForTests]:
    """Broker B over HTTPS, publishing a refresh hint of 1 s."""
    _ca, cert, key = pki
    with BrokerForTests(
        trust_domain=PEER,
        issuer="https://b.example",
        tls_mode="tls",
        tls_cert=str(cert),
        tls_key=str(key),
        federation_refresh_hint=1,
        admin_transport=httpx.HTTPTransport(verify=ssl.create_default_context(cafile=_ca)),
    ) as running:
        yield running


# Each command signs in, and one run in this process takes milliseconds: a test polling
# through the CLI would spend the default burst of sign-ins (10) in half a second.
MANY_SIGN_INS = {"TASKLEASE_ADMIN_AUTH_BURST": "1000"}


def _env(broker: RunningBroker, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        COLUMNS="200",
        TASKLEASE_URL=broker.url,
        TASKLEASE_ADMIN_SECRET=broker.admin_secret,
    )
    return env


def cli(broker: RunningBroker, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """An operator's ``tasklease *args``, run in this process (``run_cli``)."""
    return run_cli(list(args), _env(broker, home))


def cli_process(broker: RunningBroker, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tasklease *args`` as a process of its own: its exit code and stderr as a shell
    sees them."""
    return subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", *args],
        capture_output=True,
        text=True,
        env=_env(broker, home),
        timeout=60,
    )


def shown(broker: RunningBroker, home: Path) -> dict[str, Any]:
    result = cli(broker, home, "federation", "show", PEER, "--json")
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_federation_commands_against_a_real_broker(
    start_broker: Callable[..., RunningBroker],
    peer: BrokerForTests,
    pki: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    ca_path, _cert, _key = pki
    local = start_broker(env={"TASKLEASE_TRUST_DOMAIN": "a.example", **MANY_SIGN_INS})
    endpoint = f"{peer.url}/v1/federation/bundle"
    added = cli(
        local, tmp_path, "federation", "add", PEER,
        "--bundle-endpoint", endpoint, "--ca-file", str(ca_path), "--max-age", "600",
        "--map", "read:data:*=read:partner:*", "--ceiling", "read:partner:*", "--max-ttl", "300",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert f"federation with {PEER} added: bundle trusted" in added.stdout
    assert "read:data:*=read:partner:*" in added.stdout
    peer_kids = peer.admin().jwks()["keys"]
    listed = cli(local, tmp_path, "federation", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert row["status"] == "trusted" and row["sequence"] > 1_700_000_000_000  # the time, in ms
    assert row["kids"] == [k["kid"] for k in peer_kids]
    assert row["scope_map"] == [["read:data:*", "read:partner:*"]]
    assert (row["max_bundle_age"], row["max_ttl"], row["ca"]) == (600, 300, "pem")
    table = cli(local, tmp_path, "federation", "list")
    assert PEER in table.stdout and "trusted" in table.stdout

    # A rotation in B reaches A's store through A's own refresher, on B's hint (1 s).
    rotated = peer.admin().rotate_signing_key()
    after = wait_for(lambda: (s := shown(local, tmp_path))["sequence"] > row["sequence"] and s)
    assert after["kids"] == rotated["kids"] and after["last_error"] == ""

    # A static bundle replaces the endpoint: read from the file now.
    bundle_file = tmp_path / "b-bundle.json"
    bundle_file.write_text(json.dumps(peer.admin().trust_bundle(), indent=2))
    replaced = cli(local, tmp_path, "federation", "add", PEER, "--bundle-file", str(bundle_file))
    assert replaced.returncode == 0, replaced.stderr
    assert "replaced: bundle trusted" in replaced.stdout and "static" in replaced.stdout
    assert shown(local, tmp_path)["bundle_endpoint_url"] is None

    removed = cli(local, tmp_path, "federation", "remove", PEER)
    assert removed.returncode == 0 and f"federation with {PEER} removed" in removed.stdout
    gone = cli(local, tmp_path, "federation", "show", PEER)
    assert gone.returncode == 1 and "not found" in (gone.stderr + gone.stdout)
    # The audit log of A has the declaration, the bundle changes and the removal.
    events = local.get(
        "/v1/audit/events", params={"limit": 1000}, headers=local.admin_headers()
    ).json()["events"]
    types = [e["event_type"] for e in events if e["event_type"].startswith("federation_")]
    assert types.count("federation_added") == 2 and types.count("federation_removed") == 1
    assert types.count("federation_bundle_updated") == 2


def test_usage_errors_are_refused_before_the_broker(
    start_broker: Callable[..., RunningBroker], tmp_path: Path
) -> None:
    local = start_broker(env=MANY_SIGN_INS)
    for args, message in (
        ((), "either --bundle-endpoint or --bundle-file"),
        (("--bundle-endpoint", "https://b.example/x", "--bundle-file", "f"), "either"),
        (("--bundle-file", str(tmp_path / "missing.json")), "cannot read the bundle file"),
        (("--bundle-endpoint", "https://b.example/x", "--map", "nope"), "FOREIGN=LOCAL"),
    ):
        result = cli_process(local, tmp_path, "federation", "add", PEER, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr + result.stdout
    refused = cli_process(
        local, tmp_path, "federation", "add", PEER, "--bundle-endpoint", "http://x/"
    )
    assert refused.returncode == 3 and "https" in refused.stderr + refused.stdout


def _sequence(broker: RunningBroker) -> tuple[int, list[str]]:
    document = broker.get("/v1/federation/bundle").json()
    return document["spiffe_sequence"], [k["kid"] for k in document["keys"]]


def test_keys_rotate_raises_the_sequence_which_survives_a_restart_and_other_workers(
    start_broker: Callable[..., RunningBroker], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    broker = start_broker(data_dir, {"TASKLEASE_TRUST_DOMAIN": "a.example", **MANY_SIGN_INS})
    first, kids = _sequence(broker)
    assert first > 1_700_000_000 and len(kids) == 1  # the time of the first bundle
    rotated = cli(broker, tmp_path, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    second, kids = _sequence(broker)
    assert second > first and len(kids) == 2
    broker.client.close()
    broker.proc.terminate()
    broker.proc.wait(timeout=20)
    # A restart on the same data: the same keys, the same sequence (not a new one).
    again = start_broker(
        data_dir, {"TASKLEASE_TRUST_DOMAIN": "a.example", **MANY_SIGN_INS}, args=("--workers", "2")
    )
    assert _sequence(again) == (second, kids)
    # Two workers: whichever answers, after a rotation through one of them, every
    # answer is one later sequence within the key refresh (a second).
    assert cli(again, tmp_path, "keys", "rotate").returncode == 0
    wait_for(lambda: _sequence(again)[0] > second)
    third = _sequence(again)[0]
    assert all(_sequence(again)[0] == third for _ in range(20))


def test_the_commands_of_docs_federation_md(
    start_broker: Callable[..., RunningBroker],
    peer: BrokerForTests,
    pki: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    ca_path, _cert, _key = pki
    text = (Path(__file__).resolve().parents[2] / "docs" / "federation.md").read_text()
    found = re.search(
        r"<!-- commands: run by tests/federation/test_federation_cli.py -->\n```sh\n(.*?)```",
        text,
        re.S,
    )
    assert found, "no commands block in docs/federation.md"
    block = (
        found.group(1)
        .replace("https://b.example/v1/federation/bundle", f"{peer.url}/v1/federation/bundle")
        .replace("b-ca.pem", str(ca_path))
    )
    commands = [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line]
    assert [c[:3] for c in commands] == [["tasklease", "federation", v] for v in
                                        ("add", "list", "show", "remove")]  # fmt: skip
    local = start_broker(env=MANY_SIGN_INS)
    for command in commands:
        result = cli(local, tmp_path, *command[1:])
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        if command[2] == "show":
            assert "trusted" in result.stdout and "read:partner-orders:*" in result.stdout
    assert "b.example" not in cli(local, tmp_path, "federation", "list").stdout
