"""An admin change's audit event says what changed: from its one event an auditor tells
the authority before the change from the authority after it.

An app's update recorded its new scope ceiling (and grants) only, while its token TTL
was written ``old->new``: an app narrowed, or widened, read the same as one left alone.
An operator's addition and rotation wrote how it signs in as ``credential=key`` (or
``credential=secret->key``), a field the sanitizer takes for a secret's: every such event
read ``credential=***REDACTED***``, so no event said whether an operator signs in with a
secret or a key, nor what a rotation changed; and which key signs in as the operator was
in no event, while an app's key is named by its thumbprint. An attestor's addition
recorded its type and the number of its policy's rules: an attestor replaced under the
same name by one that trusts other keys (its settings) and grants other scopes (its
policy) left two identical events, and nothing in the log said what either could grant.

Would fail if: ``app_updated`` did not write the ceiling before and after the change;
``operator_added`` and ``operator_credential_rotated`` did not say, unredacted, how the
operator signs in, and name its key by its RFC 7638 thumbprint; or ``attestor_added`` did
not name its issuer, where its keys come from, the scopes its policy grants, and digests
of the settings and policy stored.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tasklease.core.auditformat import read_fields
from tasklease.core.store import AuditQuery

K8S_ISS = "https://kubernetes.default.svc.cluster.local"
GRANT = {"type": "resource_access", "actions": ["read"], "locations": ["https://api.example/o"]}


def _events(broker: Any, event_type: str) -> list[Any]:
    return broker.store.query_audit(AuditQuery(event_type=event_type, limit=100))[0]


def test_an_app_update_records_the_ceiling_before_and_after(broker: Any, kit: Any) -> None:
    admin = kit.admin(broker).claims
    app, _ = broker.register_app(
        admin, name="narrowed", scopes=["read:data:*", "write:data:*"], token_ttl=None, ctx=kit.ctx
    )
    broker.update_app(admin, app.app_id, scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx)
    (narrowed,) = _events(broker, "app_updated")
    assert "scopes=[read:data:* write:data:*]->[read:data:*]" in narrowed.detail

    broker.update_app(
        admin,
        app.app_id,
        scopes=[],
        token_ttl=None,
        authorization_details=[GRANT],
        ctx=kit.ctx,
    )
    moved = _events(broker, "app_updated")[-1]
    assert "scopes=[read:data:*]->[]" in moved.detail
    assert "grants=[]->[resource_access#" in moved.detail


def _jwks() -> str:
    from nacl.signing import SigningKey

    from tasklease.rules import jws

    key = bytes(SigningKey.generate().verify_key)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(key), "kid": "k1"}
    return json.dumps({"keys": [jwk]})


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def test_an_attestor_replaced_says_what_each_trusts_and_grants(broker: Any, kit: Any) -> None:
    admin = kit.admin(broker).claims
    first = [{"match": {"namespace": "billing"}, "scope": ["read:invoices:*"]}]
    second = [
        {"match": {"namespace": "billing"}, "scope": ["read:invoices:*", "write:payments:*"]},
        {"match": {"namespace": "ops"}, "scope": ["read:metrics:*"]},
    ]
    broker.attestation.add(
        admin,
        name="prod",
        type="k8s_sat",
        settings={"issuer": K8S_ISS, "jwks": _jwks()},
        policy=first,
        ctx=kit.ctx,
    )
    stored_first = broker.store.get_attestor("prod")
    broker.attestation.add(
        admin,
        name="prod",
        type="k8s_sat",
        settings={"issuer": K8S_ISS, "jwks": _jwks()},
        policy=second,
        ctx=kit.ctx,
    )
    stored_second = broker.store.get_attestor("prod")
    before, after = _events(broker, "attestor_added")

    was, now = read_fields(before.detail), read_fields(after.detail)
    assert was["issuer"] == now["issuer"] == K8S_ISS
    assert " scope=[read:invoices:*] " in before.detail
    assert " scope=[read:invoices:* write:payments:* read:metrics:*] " in after.detail
    # The stored record is the one the event describes, and another record another event.
    assert was["settings"] == _digest(stored_first.settings)
    assert now["settings"] == _digest(stored_second.settings)
    assert was["settings"] != now["settings"]
    assert was["policy"] == _digest(stored_first.policy)
    assert now["policy"] == _digest(stored_second.policy)
    assert now["replaced"] == "true"


def test_an_attestors_digests_are_those_of_what_the_api_shows(broker: Any, kit: Any) -> None:
    """docs/attestation.md: the digests are of the settings and policy as shown, written
    as compact JSON with sorted keys."""
    from tasklease.http.wire import attestor_view

    broker.attestation.add(
        kit.admin(broker).claims,
        name="shown",
        type="k8s_sat",
        settings={"jwks": _jwks(), "issuer": K8S_ISS},
        policy=[{"scope": ["read:x:*"], "match": {"namespace": "a"}, "ttl": 60}],
        ctx=kit.ctx,
    )
    view = attestor_view(broker.store.get_attestor("shown"))
    fields = read_fields(_events(broker, "attestor_added")[0].detail)
    for name in ("settings", "policy"):
        text = json.dumps(view[name], separators=(",", ":"), sort_keys=True)
        assert fields[name] == _digest(text)


def test_an_operators_key_is_named_when_it_is_given_and_replaced(broker: Any, kit: Any) -> None:
    import base64

    from nacl.signing import SigningKey

    from tasklease.rules.jws import jwk_thumbprint

    admin = kit.admin(broker).claims
    first, second = (bytes(SigningKey.generate().verify_key) for _ in range(2))
    broker.add_operator(
        admin, name="keyed", role="admin", public_key=base64.b64encode(first).decode(), ctx=kit.ctx
    )
    (added,) = _events(broker, "operator_added")
    assert f"sign_in=key public_key_jkt={jwk_thumbprint(first)} " in added.detail

    broker.rotate_operator(
        admin, "keyed", public_key=base64.b64encode(second).decode(), ctx=kit.ctx
    )
    broker.rotate_operator(admin, "keyed", public_key=None, ctx=kit.ctx)
    to_key, to_secret = _events(broker, "operator_credential_rotated")
    assert (
        f"sign_in=key->key public_key_jkt={jwk_thumbprint(first)}->{jwk_thumbprint(second)},"
        in to_key.detail
    )
    assert f"sign_in=key->secret public_key_jkt={jwk_thumbprint(second)}->-," in to_secret.detail
    broker.add_operator(admin, name="plain", role="auditor", public_key=None, ctx=kit.ctx)
    plain = _events(broker, "operator_added")[-1]
    assert " sign_in=secret by=admin" in plain.detail
    for event in (added, to_key, to_secret, plain):
        assert "REDACTED" not in event.detail
