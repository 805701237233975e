# Would fail if: opening a tenant made keys for it (a lost or never copied key directory
# silently became a new signing key and a second audit log key for the same log), a
# tenant whose keys do not open were served or refused without a denial_id naming one
# audit event (or with one event per request), its keys back did not bring it back, or a
# tenant whose creation stopped half-way could not be finished by creating it again.
"""A tenant's keys are made when it is created, and only then (docs/decisions.md 152).

In process, as ``tasklease init`` and ``tasklease serve`` build a broker (``build_broker``,
plaintext keys in a directory, SQLite), with the HTTP app over it: a restart is a new
broker and a new :class:`~tasklease.tenancy.Tenancy` on the same files. tests/postgres
covers the replicas with their own copy of the key directory.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from tests.security.security_support import admin as admin_token

from tasklease.core.auditformat import AuditEntry
from tasklease.core.broker import Broker, RequestContext
from tasklease.core.config import Config
from tasklease.core.errors import Conflict, Unavailable
from tasklease.core.keys import load_or_create_keyring
from tasklease.core.passwords import hash_secret
from tasklease.core.records import AuditQuery
from tasklease.core.tokens import Claims
from tasklease.http.app import create_app
from tasklease.keystore.plaintext import PlaintextKeyProvider
from tasklease.server import build_broker
from tasklease.tenancy import RECHECK, REPORT_EVERY, Tenancy, report_tenants_without_keys

CTX = RequestContext(request_id="req-tenant-keys", remote="127.0.0.1")
SECRET = "tenant keys admin secret, long enough " + "x" * 8


class Monotonic:
    """The tenancy's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Place:
    """A broker's files (what `tasklease init` made) and what opens them."""

    def __init__(self, directory: Path, secret_hash: str) -> None:
        self.directory = directory
        self.config = Config(
            admin_secret_hash=secret_hash,
            data_dir=str(directory),
            key_dir=str(directory / "keys"),
            database=str(directory / "broker.db"),
            key_provider="plaintext",
        )
        self.clock = Monotonic()
        self._open: list[tuple[Broker, Tenancy]] = []
        made = build_broker(self.config, create=True)
        made.record_keys_made(CTX, signing_key=True, log_key=True)
        made.set_up_first_admin("admin", CTX)
        made.audit.close()
        made.store.close()

    def tenant_keys(self, name: str) -> Path:
        return self.directory / "keys" / "tenants" / name

    def start(self) -> tuple[Broker, Tenancy]:
        """A process serving these files: ``build_broker`` and its tenancy."""
        broker = build_broker(self.config)
        tenancy = Tenancy(broker, monotonic=self.clock)
        self._open.append((broker, tenancy))
        return broker, tenancy

    def client(self, broker: Broker, tenancy: Tenancy) -> TestClient:
        return TestClient(create_app(broker, background=False, tenancy=tenancy))

    def stop(self) -> None:
        for broker, tenancy in self._open:
            tenancy.close()
            broker.audit.close()
            broker.store.close()
        self._open.clear()


@pytest.fixture(scope="module")
def secret_hash() -> str:
    return hash_secret(SECRET)


@pytest.fixture
def place(tmp_path: Path, secret_hash: str) -> Iterator[Place]:
    made = Place(tmp_path / "data", secret_hash)
    yield made
    made.stop()


def admin(broker: Broker) -> Claims:
    """The default tenant's admin, as ``admin_auth`` mints it (without argon2)."""
    return admin_token(broker).claims


def key_files(directory: Path) -> list[str]:
    """The key files in ``directory`` and below it."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("signing-*.pem"))


def events(broker: Broker, event_type: str | None = None) -> list[Any]:
    found, _ = broker.store.query_audit(AuditQuery(event_type=event_type, limit=1000))
    return found


def tenant_events(broker: Broker, name: str) -> list[str]:
    found, _ = broker.store.for_tenant(name).query_audit(AuditQuery(limit=1000))
    return [event.event_type for event in found]


def test_a_tenants_keys_are_made_and_audited_when_it_is_created(place: Place) -> None:
    broker, tenancy = place.start()
    _, operator, secret = tenancy.create(admin(broker), name="acme", trust_domain=None, ctx=CTX)
    keys = place.tenant_keys("acme")
    assert len(key_files(keys)) == 2 and len(key_files(keys / "log")) == 1
    # As init's for the default tenant: audited in the tenant's own log, by its creator,
    # before its first operator.
    assert tenant_events(broker, "acme") == [
        "signing_key_created",
        "audit_log_key_created",
        "operator_added",
    ]
    served = tenancy.broker("acme")
    assert served is not None
    made = [e.detail for e in served.store.query_audit(AuditQuery(limit=10))[0]]
    assert f"kid={served.keyring.active_kid}" in made[0] and "by=admin" in made[0]
    # Served end to end, over HTTP: its admin signs in and its JWKS is its key.
    with place.client(broker, tenancy) as client:
        signed_in = client.post(
            "/t/acme/v1/operator/auth", json={"name": "admin", "secret": secret}
        )
        assert signed_in.status_code == 200, signed_in.text
        jwks = client.get("/t/acme/.well-known/jwks.json").json()
        assert jwks["keys"][0]["kid"] == served.keyring.active_kid
    assert operator.name == "admin"
    # Creating it again makes nothing: it is complete.
    with pytest.raises(Conflict):
        tenancy.create(admin(broker), name="acme", trust_domain=None, ctx=CTX)
    assert len(key_files(keys)) == 2 and len(key_files(keys / "log")) == 1


@pytest.mark.parametrize("lost", ["the key directory", "the audit log key"])
def test_a_tenant_whose_keys_are_gone_is_refused_and_gets_no_new_ones(
    place: Place, tmp_path: Path, caplog: pytest.LogCaptureFixture, lost: str
) -> None:
    broker, tenancy = place.start()
    tenancy.create(admin(broker), name="acme", trust_domain=None, ctx=CTX)
    kid = tenancy.broker("acme").keyring.active_kid  # type: ignore[union-attr]
    keys = place.tenant_keys("acme")
    saved = tmp_path / "saved"
    shutil.copytree(keys, saved, symlinks=True)
    place.stop()
    shutil.rmtree(keys if lost == "the key directory" else keys / "log")
    before = key_files(place.directory / "keys")

    broker, tenancy = place.start()  # a restart, or another replica with its own copy
    path = "/t/acme/v1/health"
    with caplog.at_level(logging.ERROR, "tasklease.tenancy"), place.client(broker, tenancy) as c:
        first = c.get(path)
        assert first.status_code == 503, first.text
        body = first.json()
        assert body["error_code"] == "service_unavailable"
        assert "keys" in body["detail"] and body["denial_id"].startswith("den_")
        assert first.headers["retry-after"]
        # Every path of the tenant, and every request: one event, one denial_id, one line.
        for other in ("/t/acme/.well-known/jwks.json", "/t/acme/v1/admin/auth", path):
            again = c.post(other, json={}) if other.endswith("auth") else c.get(other)
            assert again.status_code == 503 and again.json()["denial_id"] == body["denial_id"]
        place.clock.now += RECHECK  # tried again: still missing, still the same report
        assert c.get(path).json()["denial_id"] == body["denial_id"]
        with pytest.raises(Unavailable) as refused:
            tenancy.broker("acme")
        assert refused.value.denial_id == body["denial_id"]

        # No key was made, for the tenant or anywhere else.
        assert key_files(place.directory / "keys") == before
        if lost == "the key directory":
            assert not keys.exists()
        else:
            assert not (keys / "log").exists()
        [event] = events(broker, "tenant_unavailable")
        assert event.outcome == "denied" and event.detail.endswith(f"denial={body['denial_id']}")
        assert "tenant=acme" in event.detail and str(keys) in event.detail
        [line] = [r.getMessage() for r in caplog.records if r.name == "tasklease.tenancy"]
        assert "tenant acme is not served" in line and str(keys) in line
        assert "copy its key directory" in line and body["denial_id"] in line

        # Reported again (a new event and denial_id) once per REPORT_EVERY, not more.
        place.clock.now += REPORT_EVERY
        later = c.get(path).json()["denial_id"]
        assert later != body["denial_id"]
        assert len(events(broker, "tenant_unavailable")) == 2

        # Its keys back (copied from where they are): served again, with its own key.
        shutil.rmtree(keys, ignore_errors=True)
        shutil.copytree(saved, keys, symlinks=True)
        place.clock.now += RECHECK
        assert c.get(path).status_code == 200
        assert c.get("/t/acme/.well-known/jwks.json").json()["keys"][0]["kid"] == kid
    # The tenant's own log holds no trace of the outage and no second key.
    assert tenant_events(broker, "acme")[:3] == [
        "signing_key_created",
        "audit_log_key_created",
        "operator_added",
    ]
    assert "audit_log_key_created" not in tenant_events(broker, "acme")[3:]


def test_creating_again_never_replaces_keys_it_recorded(place: Place) -> None:
    broker, tenancy = place.start()
    tenancy.create(admin(broker), name="acme", trust_domain=None, ctx=CTX)
    place.stop()
    keys = place.tenant_keys("acme")
    shutil.rmtree(keys)
    broker, tenancy = place.start()
    with pytest.raises(Unavailable) as refused:
        tenancy.create(admin(broker), name="acme", trust_domain=None, ctx=CTX)
    assert refused.value.denial_id
    assert not keys.exists()


def test_a_tenant_created_half_way_is_finished_by_creating_it_again(place: Place) -> None:
    broker, tenancy = place.start()
    keys = place.tenant_keys("acme")
    # Stopped after its record, before its keys.
    broker.create_tenant(admin(broker), name="acme", trust_domain=None, ctx=CTX)
    with place.client(broker, tenancy) as client:
        # No tenant yet: unknown (404), not refused, nothing logged as lost, no keys made.
        assert client.get("/t/acme/v1/health").status_code == 404
        assert not keys.exists() and not events(broker, "tenant_unavailable")
        place.clock.now += RECHECK
        created = client.post(
            "/v1/admin/tenants",
            json={"name": "acme"},
            headers={"Authorization": f"Bearer {_admin_token(client)}"},
        )
        assert created.status_code == 201, created.text
        assert client.get("/t/acme/v1/health").status_code == 200
        signed_in = client.post(
            "/t/acme/v1/operator/auth",
            json={"name": "admin", "secret": created.json()["admin_secret"]},
        )
        assert signed_in.status_code == 200, signed_in.text
    assert len(key_files(keys)) == 2
    assert tenant_events(broker, "acme")[:2] == ["signing_key_created", "audit_log_key_created"]


def test_keys_made_but_not_yet_recorded_are_kept_and_recorded(place: Place) -> None:
    broker, tenancy = place.start()
    broker.create_tenant(admin(broker), name="acme", trust_domain=None, ctx=CTX)
    # Stopped after its keys were made, before they were audited.
    keys = place.tenant_keys("acme")
    ring = load_or_create_keyring(keys, PlaintextKeyProvider())
    load_or_create_keyring(keys / "log", PlaintextKeyProvider())
    made = key_files(keys)
    tenancy.create(admin(broker), name="acme", trust_domain=None, ctx=CTX)
    assert key_files(keys) == made
    served = tenancy.broker("acme")
    assert served is not None and served.keyring.active_kid == ring.active_kid
    assert tenant_events(broker, "acme") == [
        "signing_key_created",
        "audit_log_key_created",
        "operator_added",
    ]


def test_a_serving_process_names_at_start_the_tenants_it_will_not_serve(
    place: Place, caplog: pytest.LogCaptureFixture
) -> None:
    broker, tenancy = place.start()
    for name in ("acme", "globex", "initech"):
        tenancy.create(admin(broker), name=name, trust_domain=None, ctx=CTX)
    broker.create_tenant(admin(broker), name="halfway", trust_domain=None, ctx=CTX)
    place.stop()
    shutil.rmtree(place.tenant_keys("acme"))
    shutil.rmtree(place.tenant_keys("globex") / "log")
    broker, _ = place.start()
    with caplog.at_level(logging.ERROR, "tasklease.tenancy"):
        assert report_tenants_without_keys(broker) == ["acme", "globex"]
    lines = [r.getMessage() for r in caplog.records if r.name == "tasklease.tenancy"]
    assert len(lines) == 2
    assert str(place.tenant_keys("acme")) in lines[0] and "copy that directory" in lines[0]
    assert not place.tenant_keys("acme").exists()


def test_a_refusal_that_cannot_be_audited_is_reported_by_the_next(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, tenancy = place.start()
    tenancy.create(admin(broker), name="acme", trust_domain=None, ctx=CTX)
    place.stop()
    shutil.rmtree(place.tenant_keys("acme"))
    broker, tenancy = place.start()
    record = broker.kernel.record

    def outage(*entries: AuditEntry) -> Any:
        raise Unavailable("audit log unavailable")

    monkeypatch.setattr(broker.kernel, "record", outage)
    with pytest.raises(Unavailable) as first:
        tenancy.broker("acme")
    assert first.value.denial_id is None  # named no event
    monkeypatch.setattr(broker.kernel, "record", record)
    with pytest.raises(Unavailable) as second:
        tenancy.broker("acme")
    [event] = events(broker, "tenant_unavailable")
    assert second.value.denial_id and event.detail.endswith(f"denial={second.value.denial_id}")


def _admin_token(client: TestClient) -> str:
    answer = client.post("/v1/admin/auth", json={"secret": SECRET})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])
