"""The ``pkcs11`` provider on a real token (SoftHSM2): keys made and used inside it."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from keystore_support import (
    PASSPHRASE,
    SoftHSM,
    key_files,
    unavailable,
    verify_with_jwks,
)

from tasklease.core.keys import load_or_create_keyring, retire_keys, rotate_key
from tasklease.keystore import (
    EncryptedFileKeyProvider,
    KeyStoreError,
    Pkcs11KeyProvider,
    Pkcs11Signer,
)


def _provider(hsm: SoftHSM, label: str) -> Pkcs11KeyProvider:
    return Pkcs11KeyProvider(hsm.module, hsm.token_label, hsm.pin, label)


@pytest.fixture
def label() -> str:
    """A key label prefix of one test's own, on the session's token."""
    return f"t-{secrets.token_hex(4)}-"


def test_keys_are_made_on_the_token_and_never_leave_it(
    softhsm: SoftHSM, label: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    ring = load_or_create_keyring(keys, _provider(softhsm, label))
    assert isinstance(ring.provider, Pkcs11KeyProvider)
    (path,) = key_files(keys)
    data = path.read_bytes()
    # The directory holds the public half only.
    assert data.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert b"PRIVATE" not in data
    public = serialization.load_pem_public_key(data)
    assert isinstance(public, Ed25519PublicKey)
    assert public.public_bytes_raw() == ring.public_key(ring.active_kid)
    (attributes,) = softhsm.protection(label).values()
    assert attributes["EXTRACTABLE"] is False
    assert attributes["SENSITIVE"] is True
    assert attributes["NEVER_EXTRACTABLE"] is True
    assert attributes["ALWAYS_SENSITIVE"] is True
    assert attributes["TOKEN"] is True
    # A signing key only: never copied, changed, nor used for anything but signing.
    for use in ("MODIFIABLE", "COPYABLE", "SIGN_RECOVER", "DECRYPT", "DERIVE", "UNWRAP"):
        assert attributes[use] is False, use
    # Signatures come from the token and verify with the published key.
    token = ring.sign(b'{"sub":"hsm"}', "JWT")
    assert verify_with_jwks(token, ring.jwks()) == {"sub": "hsm"}


def test_the_token_refuses_to_hand_out_the_private_key(
    softhsm: SoftHSM, label: str, tmp_path: Path
) -> None:
    import pkcs11
    from pkcs11 import Attribute

    load_or_create_keyring(tmp_path / "keys", _provider(softhsm, label))
    with softhsm.session() as session:
        (key,) = softhsm.private_keys(session, label).values()
        with pytest.raises(pkcs11.PKCS11Error):
            key[Attribute.VALUE]


def test_rotation_keeps_old_public_keys_and_retirement_destroys_token_objects(
    softhsm: SoftHSM, label: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    provider = _provider(softhsm, label)
    first = load_or_create_keyring(keys, provider)
    old_token = first.sign(b'{"n":1}', "JWT")
    second = rotate_key(keys, provider)
    # Through the ring's own provider, as the broker's rotation and refresh do.
    assert first.provider is provider
    third = rotate_key(keys, first.provider)
    ring = load_or_create_keyring(keys, first.provider)
    assert ring.kids() == [third, second, first.active_kid]
    assert verify_with_jwks(old_token, ring.jwks()) == {"n": 1}
    assert jwt_kid(ring.sign(b"{}", "JWT")) == third
    assert len(softhsm.protection(label)) == 3
    assert retire_keys(keys, {second}, provider) == [first.active_kid]
    assert len(softhsm.protection(label)) == 2
    assert load_or_create_keyring(keys, provider).kids() == [third, second]


def test_retiring_a_key_through_the_broker_destroys_its_token_objects(
    softhsm: SoftHSM, label: str, tmp_path: Path
) -> None:
    from tasklease.core.broker import Broker, RequestContext
    from tasklease.core.config import Config
    from tasklease.core.store import AuditQuery
    from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
    from tasklease.storage import MemoryStore

    keys = tmp_path / "keys"
    provider = _provider(softhsm, label)
    ring = load_or_create_keyring(keys, provider)
    broker = Broker(Config(key_dir=str(keys)), MemoryStore(), ring, nonce_secret=b"n" * 32)
    _, admin = mint(
        ring,
        kind=KIND_ADMIN,
        iss=broker.config.issuer,
        sub="admin",
        aud=broker.config.audience,
        iat=int(time.time()),
        ttl=60,
        scope=ADMIN_SCOPES,
        client_id="admin",
    )
    ctx = RequestContext(request_id="retire-hsm")
    new_kid, old_kid = broker.rotate_signing_key(admin, ctx)
    held = len(softhsm.protection(label))  # both signing keys (and the log's key)
    assert broker.retire_signing_key(admin, old_kid, ctx) == (new_kid,)
    assert len(softhsm.protection(label)) == held - 1  # the old key's objects are gone
    assert load_or_create_keyring(keys, provider).kids() == [new_kid]
    events, _ = broker.store.query_audit(AuditQuery(limit=100))
    assert [e.event_type for e in events].count("signing_key_retired") == 1


def jwt_kid(token: str) -> str:
    import jwt

    return str(jwt.get_unverified_header(token)["kid"])


def test_a_public_key_file_that_does_not_match_the_token_key_is_refused(
    softhsm: SoftHSM, label: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    load_or_create_keyring(keys, _provider(softhsm, label))
    (path,) = key_files(keys)
    other = Ed25519PrivateKey.generate().public_key()
    path.write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyStoreError, match="does not hold the key its name says"):
        load_or_create_keyring(keys, _provider(softhsm, label))
    # Named for the planted key, the file still does not match the token's key.
    from tasklease.core.keys import jwk_thumbprint

    kid = jwk_thumbprint(other.public_bytes_raw())
    renamed = path.with_name(path.name[: -len("XXXXXXXX.pem")] + f"{kid[:8]}.pem")
    path.rename(renamed)
    with pytest.raises(KeyStoreError, match="does not match"):
        load_or_create_keyring(keys, _provider(softhsm, label))


def test_a_key_missing_from_the_token_is_refused(
    softhsm: SoftHSM, label: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    load_or_create_keyring(keys, _provider(softhsm, label))
    with pytest.raises(KeyStoreError, match="holds no private key labelled"):
        load_or_create_keyring(keys, _provider(softhsm, label + "other-"))


def test_unknown_token_and_module_are_clear_errors(
    softhsm: SoftHSM, label: str, tmp_path: Path
) -> None:
    # (A wrong PIN: test_serve.py, in a process of its own: PKCS#11 logs in a process once.)
    provider = Pkcs11KeyProvider(softhsm.module, "no-such-token", softhsm.pin, label)
    with pytest.raises(KeyStoreError, match="no PKCS#11 token labelled 'no-such-token'"):
        load_or_create_keyring(tmp_path / "b", provider)
    provider = Pkcs11KeyProvider("/nonexistent/module.so", softhsm.token_label, "1", label)
    with pytest.raises(KeyStoreError, match="cannot load the PKCS#11 module"):
        load_or_create_keyring(tmp_path / "c", provider)


def test_providers_do_not_read_each_others_keys(
    softhsm: SoftHSM, label: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    load_or_create_keyring(keys, _provider(softhsm, label))
    with pytest.raises(KeyStoreError, match="PKCS#11 token"):
        load_or_create_keyring(keys, EncryptedFileKeyProvider(PASSPHRASE.encode()))
    other = tmp_path / "other"
    load_or_create_keyring(other, EncryptedFileKeyProvider(PASSPHRASE.encode()))
    with pytest.raises(KeyStoreError, match='encrypted signing key .key_provider = "file"'):
        load_or_create_keyring(other, _provider(softhsm, label))


def test_signing_cost_on_softhsm(softhsm: SoftHSM, label: str, tmp_path: Path) -> None:
    """Not a limit: prints the per-signature cost (docs/performance.md quotes it)."""
    ring = load_or_create_keyring(tmp_path / "keys", _provider(softhsm, label))
    signer = ring.provider.load_keys(tmp_path / "keys")[0]  # type: ignore[union-attr]
    assert isinstance(signer, Pkcs11Signer)
    memory = nacl.signing.SigningKey.generate()
    payload = b'{"iss":"tasklease","sub":"spiffe://x/agent/o/t/i","scope":["read:data:*"]}' * 3
    rounds = 300

    def per_call(sign: object) -> float:
        start = time.perf_counter()
        for _ in range(rounds):
            sign(payload)  # type: ignore[operator]
        return (time.perf_counter() - start) / rounds * 1e6

    hsm_us = min(per_call(signer.sign) for _ in range(3))
    memory_us = min(per_call(memory.sign) for _ in range(3))
    print(f"\nEd25519 signature: SoftHSM2 {hsm_us:.0f} us, in memory {memory_us:.0f} us")
    assert len(signer.sign(payload)) == 64


def test_ci_fails_instead_of_skipping() -> None:
    """Without SoftHSM2, CI=true turns the skip into a failure."""
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        unavailable("SoftHSM2 missing", {"CI": "true"})
    with pytest.raises(pytest.skip.Exception):
        unavailable("SoftHSM2 missing", {})


def test_a_rotation_refused_before_activation_leaves_nothing_on_the_token(
    softhsm: SoftHSM, label: str, tmp_path: Path
) -> None:
    """The broker's audit write failed ("nothing was changed"): the key pair made on the
    token is destroyed with its pending public half. A process killed at that point
    leaves both, and the next load destroys them; neither ever becomes active."""
    keys = tmp_path / "keys"
    provider = _provider(softhsm, label)
    first = load_or_create_keyring(keys, provider)
    seen: list[nacl.signing.VerifyKey] = []

    def refuse(key: nacl.signing.VerifyKey) -> None:
        seen.append(key)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        rotate_key(keys, provider, before_activation=refuse)
    assert len(seen) == 1 and len(softhsm.protection(label)) == 1
    assert [p.name for p in keys.iterdir() if p.name.startswith(".pending-")] == []
    assert load_or_create_keyring(keys, provider).kids() == [first.active_kid]

    dies_while_confirming = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from tasklease.core.keys import rotate_key\n"
        "from tasklease.keystore import Pkcs11KeyProvider\n"
        "module, token, pin, label, keys = sys.argv[1:]\n"
        "rotate_key(Path(keys), Pkcs11KeyProvider(module, token, pin, label),\n"
        "           before_activation=lambda key: os._exit(3))  # no cleanup, as SIGKILL\n"
        "os._exit(1)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", dies_while_confirming, softhsm.module, softhsm.token_label]
        + [softhsm.pin, label, str(keys)],
        check=False,
        timeout=120,
    )
    assert child.returncode == 3  # it died inside the confirmation
    assert len(softhsm.protection(label)) == 2
    assert len([p for p in keys.iterdir() if p.name.startswith(".pending-")]) == 1
    assert load_or_create_keyring(keys, provider).kids() == [first.active_kid]
    assert len(softhsm.protection(label)) == 1
    assert [p.name for p in keys.iterdir() if p.name.startswith(".pending-")] == []
    confirmed = rotate_key(keys, provider, before_activation=seen.append)
    assert load_or_create_keyring(keys, provider).kids() == [confirmed, first.active_kid]
