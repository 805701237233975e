"""The key ring: RFC 7638 thumbprints, JWKS, rotation, and keys on disk."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tasklease.core.errors import Unavailable
from tasklease.core.keys import (
    KeyRing,
    jwk_thumbprint,
    load_or_create_keyring,
    retire_keys,
    rotate_key,
)
from tasklease.keystore.plaintext import PlaintextKeyProvider
from tasklease.rules import jws as _jws

PLAIN = PlaintextKeyProvider()  # these tests are about the ring, not keys at rest

# RFC 8037 appendix A.1 (key) and A.3 (its RFC 7638 thumbprint).
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
RFC8037_THUMBPRINT_HEX = "90facafea9b1556698540f70c0117a22ea37bd5cf3ed3c47093c1707282b4b89"

TYPS = frozenset({"JWT"})


def _key_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("signing-*.pem"))


def _decode(ring: KeyRing, token: str) -> _jws.Decoded:
    return _jws.decode(token, resolve_key=ring.verify_key, allowed_typs=TYPS)


# -- thumbprint ----------------------------------------------------------------------


def test_thumbprint_rfc8037_a3() -> None:
    public = _jws.b64url_decode(RFC8037_X)
    assert jwk_thumbprint(public) == RFC8037_THUMBPRINT
    assert _jws.b64url_decode(RFC8037_THUMBPRINT).hex() == RFC8037_THUMBPRINT_HEX
    private = nacl.signing.SigningKey(_jws.b64url_decode(RFC8037_D))
    assert KeyRing(private).active_kid == RFC8037_THUMBPRINT


def test_thumbprint_depends_on_the_key_and_checks_length() -> None:
    public = bytearray(_jws.b64url_decode(RFC8037_X))
    public[0] ^= 1
    assert jwk_thumbprint(bytes(public)) != RFC8037_THUMBPRINT
    with pytest.raises(ValueError, match="32 bytes"):
        jwk_thumbprint(b"\x00" * 31)


# -- the ring ------------------------------------------------------------------------


def test_ring_signs_and_verifies_by_kid() -> None:
    ring = KeyRing.generate()
    token = ring.sign(b'{"sub":"a"}', "JWT")
    decoded = _decode(ring, token)
    assert decoded.kid == ring.active_kid
    assert decoded.claims == {"sub": "a"}
    signature = ring.sign_detached(b"record")
    key = ring.verify_key(ring.active_kid)
    assert key is not None
    assert _jws.verify_detached(b"record", signature, key)
    assert ring.verify_key("nope") is None
    assert ring.public_key("nope") is None
    assert ring.public_key(ring.active_kid) == bytes(key)


def test_ring_keeps_previous_keys_verify_only() -> None:
    old = nacl.signing.SigningKey.generate()
    older = nacl.signing.SigningKey.generate()
    new = nacl.signing.SigningKey.generate()
    old_token = KeyRing(old).sign(b"{}", "JWT")
    ring = KeyRing(new, [old, older.verify_key, new])
    assert ring.kids() == [
        jwk_thumbprint(bytes(new.verify_key)),
        jwk_thumbprint(bytes(old.verify_key)),
        jwk_thumbprint(bytes(older.verify_key)),
    ]
    assert _decode(ring, old_token).kid == jwk_thumbprint(bytes(old.verify_key))
    assert _decode(ring, ring.sign(b"{}", "JWT")).kid == ring.active_kid


def test_jwks_shape() -> None:
    old = nacl.signing.SigningKey.generate()
    ring = KeyRing(nacl.signing.SigningKey.generate(), [old])
    jwks = ring.jwks()
    assert list(jwks) == ["keys"]
    assert [jwk["kid"] for jwk in jwks["keys"]] == ring.kids()
    assert jwks["keys"][0]["kid"] == ring.active_kid
    for jwk in jwks["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}
        assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == (
            "OKP",
            "Ed25519",
            "sig",
            "EdDSA",
        )
        assert jwk["kid"] == jwk_thumbprint(_jws.b64url_decode(jwk["x"]))
        assert ring.public_key(jwk["kid"]) == _jws.b64url_decode(jwk["x"])


def test_jwks_verifies_tokens_with_pyjwt() -> None:
    ring = KeyRing.generate()
    token = ring.sign(b'{"sub":"a"}', "JWT")
    jwk_set = jwt.PyJWKSet.from_dict(ring.jwks())
    key = jwk_set[ring.active_kid]
    assert jwt.decode(token, key, algorithms=["EdDSA"]) == {"sub": "a"}


def test_repr_holds_no_key_material() -> None:
    key = nacl.signing.SigningKey.generate()
    text = repr(KeyRing(key))
    assert bytes(key).hex() not in text
    assert _jws.b64url_encode(bytes(key)) not in text


# -- on disk -------------------------------------------------------------------------


def test_first_load_creates_one_key_with_safe_modes(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    ring = load_or_create_keyring(directory, PLAIN)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = _key_files(directory)
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert files[0].name.endswith(f"-{ring.active_kid[:8]}.pem")
    data = files[0].read_bytes()
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    loaded = serialization.load_pem_private_key(data, password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    assert jwk_thumbprint(loaded.public_key().public_bytes_raw()) == ring.active_kid
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_created_modes_do_not_depend_on_the_umask(tmp_path: Path, umask: int) -> None:
    directory = tmp_path / "keys"
    previous = os.umask(umask)
    try:
        load_or_create_keyring(directory, PLAIN)
        rotate_key(directory, PLAIN)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in _key_files(directory):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(load_or_create_keyring(directory, PLAIN).kids()) == 2


def test_reload_gives_the_same_key(tmp_path: Path) -> None:
    first = load_or_create_keyring(tmp_path, PLAIN)
    token = first.sign(b'{"n":1}', "JWT")
    second = load_or_create_keyring(tmp_path, PLAIN)
    assert second.active_kid == first.active_kid
    assert second.kids() == [first.active_kid]
    assert _decode(second, token).claims == {"n": 1}
    assert len(_key_files(tmp_path)) == 1


def test_rotation_keeps_old_kid_verifiable(tmp_path: Path) -> None:
    first = load_or_create_keyring(tmp_path, PLAIN)
    old_token = first.sign(b"{}", "JWT")
    new_kid = rotate_key(tmp_path, PLAIN)
    assert new_kid != first.active_kid
    ring = load_or_create_keyring(tmp_path, PLAIN)
    assert ring.active_kid == new_kid
    assert ring.kids() == [new_kid, first.active_kid]
    assert _decode(ring, old_token).kid == first.active_kid
    assert _decode(ring, ring.sign(b"{}", "JWT")).kid == new_kid
    third = rotate_key(tmp_path, PLAIN)
    assert load_or_create_keyring(tmp_path, PLAIN).kids() == [third, new_kid, first.active_kid]
    for path in _key_files(tmp_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_newest_key_is_active_even_if_the_clock_went_back(tmp_path: Path) -> None:
    ring = load_or_create_keyring(tmp_path, PLAIN)
    (only,) = _key_files(tmp_path)
    future = only.with_name(f"signing-29991231T235959999999Z-{ring.active_kid[:8]}.pem")
    only.rename(future)
    new_kid = rotate_key(tmp_path, PLAIN)
    assert load_or_create_keyring(tmp_path, PLAIN).active_kid == new_kid


def test_retire_removes_old_keys_but_never_the_active_one(tmp_path: Path) -> None:
    first = load_or_create_keyring(tmp_path, PLAIN).active_kid
    second = rotate_key(tmp_path, PLAIN)
    third = rotate_key(tmp_path, PLAIN)
    assert retire_keys(tmp_path, keep_kids={second}, provider=PLAIN) == [first]
    assert load_or_create_keyring(tmp_path, PLAIN).kids() == [third, second]
    assert retire_keys(tmp_path, keep_kids=(), provider=PLAIN) == [second]
    assert load_or_create_keyring(tmp_path, PLAIN).kids() == [third]


def test_a_retirement_refused_before_removal_removes_nothing(tmp_path: Path) -> None:
    first = load_or_create_keyring(tmp_path, PLAIN).active_kid
    second = rotate_key(tmp_path, PLAIN)
    told: list[list[str]] = []

    def refuse(going: list[str]) -> None:
        told.append(going)
        raise RuntimeError("not audited")

    with pytest.raises(RuntimeError):
        retire_keys(tmp_path, (), PLAIN, before_removal=refuse)
    assert told == [[first]]
    assert load_or_create_keyring(tmp_path, PLAIN).kids() == [second, first]
    assert retire_keys(tmp_path, (), PLAIN, before_removal=told.append) == [first]
    assert told[-1] == [first] and load_or_create_keyring(tmp_path, PLAIN).kids() == [second]


def test_group_readable_key_file_refused(tmp_path: Path) -> None:
    load_or_create_keyring(tmp_path, PLAIN)
    (path,) = _key_files(tmp_path)
    for mode in (0o640, 0o604, 0o660, 0o601):
        path.chmod(mode)
        with pytest.raises(ValueError, match="group or others"):
            load_or_create_keyring(tmp_path, PLAIN)
        with pytest.raises(ValueError, match="group or others"):
            rotate_key(tmp_path, PLAIN)
    path.chmod(0o600)
    load_or_create_keyring(tmp_path, PLAIN)


def test_group_writable_directory_refused(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    load_or_create_keyring(directory, PLAIN)
    directory.chmod(0o770)
    with pytest.raises(ValueError, match="writable by group or others"):
        load_or_create_keyring(directory, PLAIN)


def test_symlinked_key_file_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    ring = load_or_create_keyring(keys, PLAIN)
    (path,) = _key_files(keys)
    elsewhere = tmp_path / "elsewhere.pem"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    with pytest.raises(ValueError, match="symlink"):
        load_or_create_keyring(keys, PLAIN)
    assert ring.active_kid  # the ring in memory is unaffected


def _plant(directory: Path, data: bytes, kid_prefix: str = "AAAAAAAA") -> Path:
    path = directory / f"signing-20300101T000000000000Z-{kid_prefix}.pem"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN PRIVATE KEY-----\n" + b"A" * 5000 + b"\n-----END PRIVATE KEY-----\n",
    ],
)
def test_corrupt_key_file_refused(tmp_path: Path, data: bytes) -> None:
    load_or_create_keyring(tmp_path, PLAIN)
    _plant(tmp_path, data)
    with pytest.raises(ValueError, match="key file"):
        load_or_create_keyring(tmp_path, PLAIN)


def test_truncated_key_file_refused(tmp_path: Path) -> None:
    load_or_create_keyring(tmp_path, PLAIN)
    (path,) = _key_files(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="key file"):
        load_or_create_keyring(tmp_path, PLAIN)


@pytest.mark.parametrize("kind", ["ed448", "p256", "openssh", "pkcs1_traditional", "encrypted"])
def test_other_key_kinds_refused(tmp_path: Path, kind: str) -> None:
    load_or_create_keyring(tmp_path, PLAIN)
    ed25519 = Ed25519PrivateKey.generate()
    none = serialization.NoEncryption()
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    data = {
        "ed448": lambda: Ed448PrivateKey.generate().private_bytes(pem, pkcs8, none),
        "p256": lambda: generate_private_key(SECP256R1()).private_bytes(pem, pkcs8, none),
        "openssh": lambda: ed25519.private_bytes(pem, serialization.PrivateFormat.OpenSSH, none),
        "pkcs1_traditional": lambda: generate_private_key(SECP256R1()).private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, none
        ),
        "encrypted": lambda: ed25519.private_bytes(
            pem, pkcs8, serialization.BestAvailableEncryption(b"secret")
        ),
    }[kind]()
    _plant(tmp_path, data)
    with pytest.raises(ValueError, match="key file"):
        load_or_create_keyring(tmp_path, PLAIN)


def test_key_file_named_for_another_key_refused(tmp_path: Path) -> None:
    load_or_create_keyring(tmp_path, PLAIN)
    other = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _plant(tmp_path, other, kid_prefix="AAAAAAAA")
    with pytest.raises(ValueError, match="does not hold the key its name says"):
        load_or_create_keyring(tmp_path, PLAIN)


def test_errors_never_carry_key_material(tmp_path: Path) -> None:
    load_or_create_keyring(tmp_path, PLAIN)
    (path,) = _key_files(tmp_path)
    data = path.read_bytes()
    path.chmod(0o644)
    with pytest.raises(ValueError) as excinfo:
        load_or_create_keyring(tmp_path, PLAIN)
    body = b"".join(data.splitlines()[1:-1]).decode()
    assert body not in str(excinfo.value)
    assert body[:16] not in str(excinfo.value)


def test_unrelated_files_are_ignored(tmp_path: Path) -> None:
    ring = load_or_create_keyring(tmp_path, PLAIN)
    (tmp_path / "README").write_text("keys live here")
    (tmp_path / ".signing-20300101T000000000000Z-AAAAAAAA.pem.tmp").write_bytes(b"partial")
    assert load_or_create_keyring(tmp_path, PLAIN).kids() == [ring.active_kid]


# -- a rotation confirmed before it takes effect (the broker audits it there) -------------


def _pending(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".pending-"))


def test_a_confirmed_key_is_no_key_of_the_directory_until_confirmed(tmp_path: Path) -> None:
    ring = load_or_create_keyring(tmp_path, PLAIN)
    seen: list[tuple[str, list[Path], list[str]]] = []

    def confirm(key: nacl.signing.VerifyKey) -> None:
        # Another process's refresh lists the key files: the pending key is not one.
        seen.append((jwk_thumbprint(bytes(key)), _key_files(tmp_path), _pending(tmp_path)))

    kid = rotate_key(tmp_path, PLAIN, before_activation=confirm)
    ((confirmed, files, pending),) = seen
    assert confirmed == kid
    assert len(files) == 1 and len(pending) == 1 and kid[:8] in pending[0]
    after = load_or_create_keyring(tmp_path, PLAIN)
    assert after.kids() == [kid, ring.active_kid]
    assert _pending(tmp_path) == []


def test_a_rotation_refused_before_activation_changes_nothing(tmp_path: Path) -> None:
    """The broker's audit write failed: the caller hears "nothing was changed", so no
    process may ever load the key (the failure the review found: it was written first)."""
    ring = load_or_create_keyring(tmp_path, PLAIN)
    before = sorted(os.listdir(tmp_path))

    def refuse(key: nacl.signing.VerifyKey) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        rotate_key(tmp_path, PLAIN, before_activation=refuse)
    assert sorted(os.listdir(tmp_path)) == before  # no key file, no pending file
    assert load_or_create_keyring(tmp_path, PLAIN).kids() == [ring.active_kid]
    again = rotate_key(tmp_path, PLAIN, before_activation=lambda key: None)  # a retry works
    assert load_or_create_keyring(tmp_path, PLAIN).kids() == [again, ring.active_kid]


def test_a_rotation_killed_before_activation_leaves_the_old_key_active(tmp_path: Path) -> None:
    """A process dies while its rotation is being audited: the key it left pending is
    never loaded, and the next process that takes the directory's lock destroys it."""
    ring = load_or_create_keyring(tmp_path, PLAIN)
    dies_while_confirming = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from tasklease.core.keys import rotate_key\n"
        "from tasklease.keystore.plaintext import PlaintextKeyProvider\n"
        "rotate_key(Path(sys.argv[1]), PlaintextKeyProvider(),\n"
        "           before_activation=lambda key: os._exit(3))  # no cleanup, as SIGKILL\n"
        "os._exit(1)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", dies_while_confirming, str(tmp_path)], check=False, timeout=120
    )
    assert child.returncode == 3  # it died inside the confirmation
    assert len(_pending(tmp_path)) == 1 and len(_key_files(tmp_path)) == 1
    assert load_or_create_keyring(tmp_path, PLAIN).kids() == [ring.active_kid]
    assert _pending(tmp_path) == []
    new_kid = rotate_key(tmp_path, PLAIN)
    assert load_or_create_keyring(tmp_path, PLAIN).kids() == [new_kid, ring.active_kid]


def test_a_pending_key_is_destroyed_by_a_rotation_and_never_made_active(tmp_path: Path) -> None:
    keys, other = tmp_path / "keys", tmp_path / "other"
    ring = load_or_create_keyring(keys, PLAIN)
    stranger = load_or_create_keyring(other, PLAIN)
    # Left by a crash, dated after every key (the newest key is the active one).
    pending = keys / f".pending-signing-29991231T235959999999Z-{stranger.active_kid[:8]}.pem"
    pending.write_bytes(_key_files(other)[0].read_bytes())
    pending.chmod(0o600)
    assert load_or_create_keyring(keys, PLAIN).active_kid == ring.active_kid  # not loaded
    pending.write_bytes(_key_files(other)[0].read_bytes())  # left again
    new_kid = rotate_key(keys, PLAIN)
    assert not pending.exists()
    assert load_or_create_keyring(keys, PLAIN).kids() == [new_kid, ring.active_kid]


def test_a_signing_key_rotation_that_cannot_be_audited_changes_nothing(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    """Found by review: the key file was written before ``signing_key_rotated``; when that
    write failed the caller heard "nothing was changed", yet the next key refresh (every
    second) and every other worker sharing the directory signed with the unaudited key."""
    from tests.core.test_audit import FlakyStore

    keys = tmp_path / "keys"
    ring = load_or_create_keyring(keys, PLAIN)
    store = FlakyStore()
    broker = make_broker(store=store, keyring=ring, key_dir=str(keys))
    worker = make_broker(store=store, keyring=ring, key_dir=str(keys))  # same directory
    store.failing = True
    with pytest.raises(Unavailable) as info:
        broker.rotate_signing_key(kit.admin(broker).claims, kit.ctx)
    assert "nothing was changed" in info.value.detail
    store.failing = False
    assert not broker.refresh_keys() and not worker.refresh_keys()
    assert broker.keyring.kids() == worker.keyring.kids() == [ring.active_kid]
    assert load_or_create_keyring(keys, PLAIN).kids() == [ring.active_kid]  # a restart
    assert _pending(keys) == []
    # Storage is back: a retry rotates, audited, and the other worker adopts the key.
    new_kid, previous = broker.rotate_signing_key(kit.admin(broker).claims, kit.ctx)
    assert previous == ring.active_kid and broker.keyring.active_kid == new_kid
    assert worker.refresh_keys() and worker.keyring.kids() == [new_kid, ring.active_kid]
    rotated = [e for e in store.iter_audit() if e.event_type == "signing_key_rotated"]
    assert len(rotated) == 1
    assert f"new_kid={new_kid} previous_kid={ring.active_kid} keys=2" in rotated[0].detail
