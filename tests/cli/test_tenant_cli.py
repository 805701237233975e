# Would fail if: the tenant commands or the global --tenant stopped working as
# docs/tenants.md shows them, or a tenant's keys rotated the default tenant's.
"""``tasklease tenant`` and ``--tenant``, run as docs/tenants.md shows them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cli_forks
import httpx
import pytest

from tasklease.client.testing import BrokerForTests

DOC = Path(__file__).resolve().parents[2] / "docs" / "tenants.md"
BIN = str(Path(sys.executable).parent)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerForTests]:
    with BrokerForTests() as running:
        yield running


def _block(marker: str, language: str) -> str:
    text = DOC.read_text()
    found = re.search(rf"<!-- {marker}[^>]*-->\n```{language}\n(.*?)```", text, re.S)
    assert found, f"no {marker} block in {DOC}"
    return found.group(1)


def _env(broker: BrokerForTests, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "COLUMNS": "200",
            "PATH": f"{BIN}:{env.get('PATH', '')}",
            "TASKLEASE_ADMIN_SECRET": broker.admin_secret,
        }
    )
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``tasklease *args``: a process forked from one that made the CLI's imports."""
    return cli_forks.run(args, env=env, timeout=60)


def test_the_walkthrough_runs_as_written(broker: BrokerForTests, tmp_path: Path) -> None:
    script = _block("walkthrough", "sh").replace("http://127.0.0.1:8080", broker.url)
    assert script.count("\n") < 10  # "in under ten commands"
    env = _env(broker, tmp_path)
    # The tenants other tests of this module made on the shared broker, in whatever order.
    before = _cli({**env, "TASKLEASE_URL": broker.url}, "tenant", "list", "--json").stdout
    others = [json.loads(line)["name"] for line in before.splitlines()]
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    created = json.loads((tmp_path / "acme.json").read_text())
    # It holds acme's admin secret: the walkthrough writes it readable by its owner only.
    assert (tmp_path / "acme.json").stat().st_mode & 0o077 == 0
    assert created["name"] == "acme" and created["base_path"] == "/t/acme"
    assert created["trust_domain"].startswith("acme.")
    # The app, the launch token and the key rotation happened in acme, not in the default.
    env["TASKLEASE_URL"] = broker.url
    default_apps = _cli(env, "app", "list", "--json")
    assert default_apps.returncode == 0, default_apps.stderr
    assert "billing" not in default_apps.stdout
    acme = {
        **env,
        "TASKLEASE_OPERATOR": "admin",
        "TASKLEASE_OPERATOR_SECRET": created["admin_secret"],
    }
    acme_apps = _cli(acme, "--tenant", "acme", "app", "list", "--json")
    assert acme_apps.returncode == 0, acme_apps.stderr
    assert "billing" in acme_apps.stdout
    jwks = httpx.get(f"{broker.url}/t/acme/.well-known/jwks.json").json()["keys"]
    assert len(jwks) == 2  # acme's first key and the one `keys rotate` made
    assert len(httpx.get(f"{broker.url}/.well-known/jwks.json").json()["keys"]) == 1
    # TASKLEASE_TENANT does what --tenant does; the default admin secret opens no tenant.
    events = _cli({**acme, "TASKLEASE_TENANT": "acme"}, "audit", "events", "--json")
    assert events.returncode == 0 and "tenant_created" not in events.stdout
    refused = _cli(env, "--tenant", "acme", "app", "list")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    listed = _cli(env, "tenant", "list", "--json")
    names = [json.loads(line)["name"] for line in listed.stdout.splitlines()]
    assert sorted(names) == sorted([*others, "acme"]), listed.stdout
    bad = _cli(env, "--tenant", "Not A Tenant", "app", "list")
    assert bad.returncode == 2 and "invalid tenant name" in bad.stderr
    removed = _cli(env, "tenant", "remove", "acme")
    assert removed.returncode == 0, removed.stderr
    gone = _cli(acme, "--tenant", "acme", "app", "list")
    assert gone.returncode == 1, gone.stdout + gone.stderr  # 404: no such tenant


# Would fail if: a command addressed to a tenant the broker does not serve (a typo of its
# name, or one removed) said only "no such endpoint", without naming the tenant or how
# to see which tenants there are.
def test_a_tenant_not_served_is_named_with_what_to_do(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    env = _env(broker, tmp_path)
    env["TASKLEASE_URL"] = broker.url
    done = _cli(env, "--tenant", "acmee", "app", "list")
    assert done.returncode == 1, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert "tenant acmee" in said and "tasklease tenant list" in said, said
    # The default tenant's own 404s are not dressed up as a tenant's absence.
    own = _cli(env, "task", "show", "no-such-task")
    assert own.returncode == 1 and "tenant" not in own.stderr, own.stderr


# Would fail if: the tenant registry's commands were sent to the tenant a profile names
# (answered 404, "no such endpoint", as if that tenant did not exist) rather than to the
# default tenant, or a tenant's operator refused there were not told that the registry
# is the default tenant's.
def test_the_registry_commands_address_the_default_tenant_whatever_names_another(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    env = _env(broker, tmp_path)
    made = _cli({**env, "TASKLEASE_URL": broker.url}, "tenant", "create", "globex", "--json")
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["admin_secret"]
    profile = tmp_path / ".config" / "tasklease" / "profile.toml"
    profile.parent.mkdir(parents=True, exist_ok=True)
    profile.write_text(
        f'url = "{broker.url}"\noperator = "admin"\noperator_secret = "{secret}"\n'
        'tenant = "globex"\n'
    )
    profile.chmod(0o600)
    bare = {k: v for k, v in env.items() if k != "TASKLEASE_ADMIN_SECRET"}
    assert _cli(bare, "app", "list").returncode == 0  # the profile opens globex
    for args in (("tenant", "list"), ("--tenant", "globex", "tenant", "list")):
        refused = _cli(bare, *args)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 3, said  # 401 at the default tenant, not a 404
        assert "no such endpoint" not in said and "serves no tenant" not in said, said
        assert "sign in to the default tenant, not to tenant globex" in said, said
    # The default tenant's admin secret, given, lists them: the profile's tenant is
    # not where the registry is.
    listed = _cli({**bare, "TASKLEASE_ADMIN_SECRET": broker.admin_secret}, "tenant", "list")
    assert listed.returncode == 0 and "globex" in listed.stdout, listed.stderr


# Would fail if: `token inspect` of a tenant's token, run without --tenant (so against
# the default tenant's JWKS), said only that the key is unknown, not that the token is
# another tenant's and how to inspect it.
def test_token_inspect_names_the_tenant_whose_token_it_is(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    from tasklease.client import AdminClient, Agent

    env = {**_env(broker, tmp_path), "TASKLEASE_URL": broker.url}
    made = _cli(env, "tenant", "create", "initech", "--json")
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["admin_secret"]
    base = f"{broker.url}/t/initech"
    with AdminClient(base, None, operator="admin", operator_secret=secret) as admin:
        launch = admin.create_launch_token("reader", ["read:data:*"])["launch_token"]
    with Agent.register(base, launch, "orch", "task", ["read:data:x"]) as agent:
        token = agent.token
        plain = _cli(env, "token", "inspect", token)
        said = " ".join(plain.stdout.split())
        assert plain.returncode == 1, said + plain.stderr
        assert "its iss names tenant initech: inspect it with --tenant initech" in said, said
        right = _cli(env, "--tenant", "initech", "token", "inspect", token)
        assert right.returncode == 0 and "valid (kid" in right.stdout, right.stdout
