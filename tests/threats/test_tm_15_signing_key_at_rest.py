# Would fail if: the default key provider wrote signing keys as plaintext PKCS#8, or the
# key loader stopped refusing a key file that group or others can read (or a key
# directory they can write), or a retired key still verified what it signed.
"""TM-15 — signing-key compromise at rest: whoever reads the broker's Ed25519 signing key
from the disk or a backup forges any token (TM-07 assumes nobody can).

What exists: keys are encrypted PKCS#8 files (mode 0600, in a 0700 directory) under a
passphrase kept apart from them, so the key directory alone (a backup, a copied volume)
does not start a broker or yield a key; the broker refuses key files and directories
others could read or replace; no answer, log line or database page carries key material;
an operator rotates the signing key with one call, and retires the stolen one with
another: nothing it signed is accepted from then on. What is missing (docs/security.md,
TM-15): by default the passphrase file lives in the same data directory.
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import SHARED_ENV, RunningBroker, b64url, jwt_parts, launch_broker
from nacl.signing import SigningKey
from threat_support import bearer, compact, refused

pytestmark = pytest.mark.slow

PASSPHRASE_FILE = "key-passphrase"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _key_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "keys").glob("signing-*.pem"))


def _private_key(data_dir: Path) -> bytes:
    """The raw active signing key, read the way a thief holding the whole data directory
    (passphrase file included) would."""
    passphrase = (data_dir / PASSPHRASE_FILE).read_text().strip().encode()
    key = serialization.load_pem_private_key(_key_files(data_dir)[-1].read_bytes(), passphrase)
    assert isinstance(key, Ed25519PrivateKey)
    return key.private_bytes_raw()


def _key_texts(data_dir: Path) -> list[str]:
    """The key as text could show it: hex and base64url (standard base64 as well)."""
    raw = _private_key(data_dir)
    return [raw.hex(), b64url(raw), b64url(raw).replace("-", "+").replace("_", "/")]


def _copy(broker: RunningBroker, into: Path) -> Path:
    copy = into / "copy"
    # Not the workers' wake-up sockets (tasklease.db.wake/): they hold nothing and cannot
    # be copied.
    skip = shutil.ignore_patterns("*.log", "*.wake")
    shutil.copytree(broker.data_dir, copy, ignore=skip)
    return copy


def test_key_files_are_private_to_the_broker_user(broker: RunningBroker) -> None:
    keys = broker.data_dir / "keys"
    assert _mode(keys) == 0o700
    assert _key_files(broker.data_dir)
    for path in [*_key_files(broker.data_dir), keys / "nonce.secret"]:
        assert _mode(path) == 0o600, path.name
    assert _mode(broker.data_dir / PASSPHRASE_FILE) == 0o600


def test_the_key_directory_alone_yields_no_key(broker: RunningBroker, tmp_path: Path) -> None:
    for path in _key_files(broker.data_dir):
        pem = path.read_bytes()
        assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"), path.name
        with pytest.raises(TypeError):  # no passphrase, no key
            serialization.load_pem_private_key(pem, None)
        with pytest.raises(ValueError):  # a guess is not the passphrase
            serialization.load_pem_private_key(pem, b"guessed-passphrase-0123456789")
    # A backup or copied volume without the passphrase does not run a broker either.
    stolen = _copy(broker, tmp_path)
    (stolen / PASSPHRASE_FILE).unlink()
    with pytest.raises(RuntimeError, match="broker exited") as failed:
        launch_broker(stolen, SHARED_ENV)
    assert "passphrase" in str(failed.value)


def test_no_answer_or_log_carries_private_key_material(broker: RunningBroker) -> None:
    forms = _key_texts(broker.data_dir)
    passphrase = (broker.data_dir / PASSPHRASE_FILE).read_text().strip()
    forms += [passphrase, "PRIVATE KEY"]
    for path in ("/.well-known/jwks.json", "/v1/health", "/v1/metrics", "/v1/openapi.json"):
        text = broker.get(path).text
        assert not [form for form in forms if form in text], path
    for jwk in broker.get("/.well-known/jwks.json").json()["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}  # no "d"
    assert not [form for form in forms if form in broker.log()]


def test_the_database_holds_no_key_material(broker: RunningBroker) -> None:
    broker.register(["read:tickets:1"])
    forms = [_private_key(broker.data_dir), *(t.encode() for t in _key_texts(broker.data_dir))]
    for path in broker.data_dir.glob("tasklease.db*"):
        if not path.is_file():  # the workers' wake-up sockets' directory
            continue
        data = path.read_bytes()
        assert not [form for form in forms if form in data], path.name


@pytest.mark.parametrize(
    ("loosen", "says"),
    [
        (lambda data: _key_files(data)[0].chmod(0o644), "group or others"),
        (lambda data: (data / "keys").chmod(0o770), "writable by group or others"),
    ],
    ids=["key-file-readable-by-others", "key-directory-writable-by-group"],
)
def test_the_broker_refuses_keys_others_could_read_or_replace(
    broker: RunningBroker, tmp_path: Path, loosen: Callable[[Path], None], says: str
) -> None:
    copy = _copy(broker, tmp_path)
    loosen(copy)
    with pytest.raises(RuntimeError, match="broker exited") as failed:
        launch_broker(copy, SHARED_ENV)
    message = str(failed.value)
    assert says in message
    assert not [form for form in _key_texts(broker.data_dir) if form in message]


def test_rotation_moves_issuance_to_a_new_key(broker: RunningBroker) -> None:
    before = broker.register(["read:tickets:1"])
    old_kid = jwt_parts(before.access_token)[0]["kid"]
    agent_attempt = broker.post("/v1/admin/keys/rotate", headers=bearer(before.access_token))
    refused(broker, agent_attempt, 403, "insufficient_scope")
    rotated = broker.post("/v1/admin/keys/rotate", headers=broker.admin_headers())
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["kid"]
    assert rotated.json()["previous_kid"] == old_kid and new_kid != old_kid
    after = broker.register(["read:tickets:1"])
    assert jwt_parts(after.access_token)[0]["kid"] == new_kid
    assert broker.get("/.well-known/jwks.json").json()["keys"][0]["kid"] == new_kid
    for path in _key_files(broker.data_dir):
        assert _mode(path) == 0o600, path.name
        assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_a_stolen_key_is_retired_at_once(broker: RunningBroker) -> None:
    """A thief read the active key: tokens it forges verify, as the broker's own do. The
    operator rotates, then retires the stolen key: at once, nothing it signed (forged or
    genuine) is accepted, and the JWKS and trust bundle no longer carry it."""
    stolen = SigningKey(_private_key(broker.data_dir))
    genuine = broker.register(["read:tickets:1"])
    header, payload = jwt_parts(genuine.access_token)
    forged = compact(header, {**payload, "scope": "read:tickets:*"}, stolen)
    check = {"json": {"token": forged}, "headers": broker.admin_headers()}
    assert broker.post("/v1/token/validate", **check).json()["valid"] is True
    rotated = broker.post("/v1/admin/keys/rotate", headers=broker.admin_headers())
    assert rotated.status_code == 200, rotated.text
    retired = broker.post(f"/v1/admin/keys/{header['kid']}/retire", headers=broker.admin_headers())
    assert retired.status_code == 200, retired.text
    assert broker.post("/v1/token/validate", **check).json()["valid"] is False
    assert not broker.is_valid(genuine.access_token)
    kids = [k["kid"] for k in broker.get("/.well-known/jwks.json").json()["keys"]]
    assert header["kid"] not in kids and kids == retired.json()["kids"]
    renewal = broker.post("/v1/token/renew", headers=bearer(forged))
    refused(broker, renewal, 401, "unauthorized")
