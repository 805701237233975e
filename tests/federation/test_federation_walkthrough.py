# Would fail if: the walkthrough of docs/federation.md stopped federating two brokers in
# under ten commands as written, or its exchange stopped answering B's token, or a
# revocation in A stopped reaching B.
"""docs/federation.md's walkthrough, run as written against two brokers (separate
processes over HTTPS with a test CA), then the exchange it shows, then a revocation."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge_support import Peer, claims, start_peer, stop_peer, wait_until
from bundle_support import CA, make_ca

DOC = Path(__file__).resolve().parents[2] / "docs" / "federation.md"
A, B = "a.example", "b.example"

pytestmark = pytest.mark.slow


def _block(marker: str) -> str:
    found = re.search(rf"<!-- {marker}: [^>]*-->\n```sh\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"no {marker} block in {DOC}"
    return found.group(1)


def _commands(script: str) -> list[str]:
    joined = script.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("pki"), name="walkthrough CA")


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory, ca: CA) -> Iterator[tuple[Peer, Peer]]:
    base = tmp_path_factory.mktemp("walkthrough")
    a = start_peer(base, A, ca)
    try:
        b = start_peer(base, B, ca)
    except BaseException:
        stop_peer(a)
        raise
    yield a, b
    stop_peer(a)
    stop_peer(b)


def _run(script: str, a: Peer, b: Peer, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    for peer, profile in ((a, "a.toml"), (b, "b.toml")):
        path = cwd / profile
        path.write_text(f'url = "{peer.url}"\nadmin_secret = "{peer.running.admin_secret}"\n')
        path.chmod(0o600)
    (cwd / "ca.pem").write_text(a.ca.pem)
    text = script.replace("https://a.example:8443", a.url).replace("https://b.example:8443", b.url)
    text = text.replace("/srv/tasklease-b", str(b.running.data_dir))
    shell = a.env()
    for name in ("TASKLEASE_URL", "TASKLEASE_ADMIN_SECRET"):
        shell.pop(name)  # each command names its broker by its profile
    shell.update(env)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", text],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=shell,
        timeout=120,
    )


def test_the_walkthrough_federates_two_brokers_as_written(
    brokers: tuple[Peer, Peer], tmp_path: Path
) -> None:
    a, b = brokers
    script = _block("walkthrough")
    assert len(_commands(script)) < 10  # "in under ten commands"
    done = _run(script, a, b, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trusted" in done.stdout and a.url in done.stdout  # federation show, on B
    credentials = b.running.data_dir / "federation" / "a.example.json"
    assert credentials.stat().st_mode & 0o077 == 0
    shown = json.loads(b.cli("federation", "show", A, "--json").stdout)
    assert shown["revocation_feed"] == a.url and shown["status"] == "trusted"
    assert json.loads(credentials.read_text())["client_secret"] not in json.dumps(shown)
    home = json.loads(a.cli("federation", "show", B, "--json").stdout)
    assert home["scope_map"] == [["read:partner-data:*", "read:data:*"]]

    # The exchange it shows: A's agent hands work to B's agent.
    alice = a.register(["read:data:*"], "t-walk-alice")
    bob = b.register(["read:partner-data:*"], "t-walk-bob")
    exchanged = _run(
        _block("exchange"),
        a,
        b,
        tmp_path,
        ALICE_TOKEN=alice.access_token,
        BOB_TOKEN=bob.access_token,
    )
    assert exchanged.returncode == 0, exchanged.stdout + exchanged.stderr
    answer = json.loads(exchanged.stdout)
    assert answer["scope"] == "read:partner-data:42" and answer["token_type"] == "Bearer"
    token = answer["access_token"]
    assert claims(token)["act"]["sub"] == bob.agent_id and b.valid(token)

    # And revoking A's agent in A ends it in B: the feed the walkthrough set up.
    started = time.monotonic()
    a.cli("revoke", "--level", "agent", "--target", alice.agent_id)
    wait_until(lambda: not b.valid(token), timeout=10, step=0.01)
    assert time.monotonic() - started < 5
