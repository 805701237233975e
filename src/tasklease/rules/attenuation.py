"""The offline attenuation format: a broker token followed by blocks its holders signed.

An agent holding a token hands part of it to a delegate without the broker by appending a
block, signed with its own registered Ed25519 key, that names the delegate (its SPIFFE ID
and Ed25519 key) and what it may do. The delegate can append the next block with its key,
and so on. The whole is one compact ASCII string (docs/formats.md)::

    tla1~<root JWS>~<block 1>~...~<block n>

* ``tla1~`` names the format and its version; a JWS starts with ``eyJ``, so the two are
  told apart by the prefix (:func:`is_chain`).
* the root is the broker-signed access token (``typ at+jwt``) exactly as issued; its
  holder's key is its ``agent_jwk``.
* a block is ``base64url(payload) "." base64url(signature)``; the payload is canonical
  JSON (sorted keys, no whitespace, UTF-8) with ``sub``, ``key``, ``exp``, ``iat``, ``jti``,
  ``depth`` and, when they narrow, ``scope``, ``grants`` and ``aud`` (absent: the
  parent's, unchanged). A payload that is not canonical is refused, so each block has one
  text.
* a block's ``sub`` is nested under the previous holder's (the root's ``sub`` for the
  first block): that name, ``/``, and one or more SPIFFE path segments of the delegate's
  (:func:`is_nested_name`). Nobody offline can tell whose a name is, only whose key signed:
  so a holder names its delegates under its own name, never another agent's (a registered
  agent's id has exactly its five segments), and every name shows who vouched for it.
* the signature is Ed25519 by the previous holder (the root's ``agent_jwk``, then each
  block's ``key``) over ``DOMAIN || SHA-256(previous element's text) || payload``: the
  previous element's hash is signed, not sent, so a block cannot be moved, dropped or
  grafted onto another chain.

This module is the codec only: it parses and signs, and checks shapes. Whether a chain
grants anything (the broker's signature, each block's attenuation by the issuance check,
expiry, revocation, the presenter's proof) is :mod:`tasklease.rules.chainverify`'s.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.signing

from tasklease.rules import grants as grant_rules
from tasklease.rules import jws
from tasklease.rules._codec import JWSError, b64url_decode_for, b64url_encode, json_object
from tasklease.rules.scopes import MAX_SCOPES, parse_scope
from tasklease.rules.secretshapes import holds_credential, holds_secret

__all__ = [
    "DOMAIN",
    "MAX_BLOCKS",
    "MAX_CHAIN_BYTES",
    "MAX_SECONDS",
    "PREFIX",
    "Block",
    "ChainError",
    "DecodedChain",
    "append_block",
    "block_payload",
    "decode",
    "delegate_name",
    "holder_key_of",
    "is_chain",
    "is_nested_name",
    "sign_block",
    "signing_input",
]

PREFIX = "tla1~"
"""The format's name and version; a chain is ``PREFIX + root + ("~" + block) * n``."""
SEPARATOR = "~"
MAX_CHAIN_BYTES = 4096
"""The largest chain accepted or produced (the access-token cap of docs/security.md)."""
MAX_BLOCKS = 8
"""The most blocks a chain may carry (the delegation depth limit bounds it further)."""
MAX_SECONDS = 253_402_300_799
"""The latest ``exp`` or ``iat`` of a block: the last second of year 9999, the last an RFC
3339 time names. JSON integers are read exactly: a time past every float (``10**400``)
would fail whoever adds to it or formats it, rather than be refused."""
DOMAIN = b"tasklease-attenuation-v1\x00"
"""Domain separation of a block's signing input: no other signature can be read as one."""

_REQUIRED = frozenset(("sub", "key", "exp", "iat", "jti", "depth"))
_OPTIONAL = frozenset(("scope", "grants", "aud"))
_JTI = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME = re.compile(r"[!-~]{1,512}")  # printable ASCII, no space: SPIFFE IDs and resources
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,128}")  # a SPIFFE ID path segment


class ChainError(Exception):
    """A chain was refused. ``reason`` is precise (for the audit log and debug logs only);
    ``category`` names the check: ``format``, ``signature``, ``claims``, ``attenuation``,
    ``depth``, ``audience``, ``renewal``, ``expired``, ``not_yet_valid``, ``revoked``,
    ``binding`` or ``holder``."""

    def __init__(self, reason: str, category: str = "format") -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


@dataclass(frozen=True, slots=True)
class Block:
    """One appended block, parsed (its signature not yet checked).

    ``sub`` is the delegate's SPIFFE ID and ``key`` its raw Ed25519 public key; ``scope``,
    ``grants`` and ``aud`` are None when the block keeps its parent's. ``text`` is the
    block as sent, ``payload`` the bytes signed after the domain and the previous hash.
    """

    sub: str
    key: bytes
    exp: int
    iat: int
    jti: str
    depth: int
    scope: tuple[str, ...] | None
    grants: tuple[dict[str, Any], ...] | None
    aud: str | None
    signature: bytes
    payload: bytes
    text: str


@dataclass(frozen=True, slots=True)
class DecodedChain:
    """A chain split into its parts. ``root_claims`` are NOT verified here."""

    text: str
    root: str
    root_claims: dict[str, Any]
    blocks: tuple[Block, ...]

    def previous(self, index: int) -> str:
        """The text block ``index`` is chained to: the root's, or the block before's."""
        return self.root if index == 0 else self.blocks[index - 1].text


def is_chain(text: object) -> bool:
    """Whether ``text`` is presented as an offline chain (by its prefix)."""
    return isinstance(text, str) and text.startswith(PREFIX)


def signing_input(previous: str, payload: bytes) -> bytes:
    """What a block's signature covers: the domain, SHA-256 of the previous element's
    text (the root JWS, or the previous block), and the block's payload."""
    return DOMAIN + hashlib.sha256(previous.encode("ascii")).digest() + payload


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the one accepted encoding of a payload."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def block_payload(
    *,
    sub: str,
    key: bytes,
    exp: int,
    iat: int,
    jti: str,
    depth: int,
    scope: tuple[str, ...] | None = None,
    grants: tuple[Mapping[str, Any], ...] | None = None,
    aud: str | None = None,
) -> bytes:
    """The canonical payload of a block (optional members only when given)."""
    fields: dict[str, Any] = {
        "sub": sub,
        "key": b64url_encode(key),
        "exp": exp,
        "iat": iat,
        "jti": jti,
        "depth": depth,
    }
    if scope is not None:
        fields["scope"] = " ".join(scope)
    if grants is not None:
        fields["grants"] = [dict(g) for g in grants]
    if aud is not None:
        fields["aud"] = aud
    payload = canonical_json(fields)
    _parse_payload(payload)  # what is produced must be what is accepted
    return payload


def append_block(text: str, payload: bytes, key: nacl.signing.SigningKey) -> str:
    """``text`` (a chain, or a root token starting one) with a block of ``payload`` signed
    by ``key``. Shapes only: :func:`tasklease.rules.chainverify.derive` checks what it grants.

    Raises:
        ChainError: the result would be larger than :data:`MAX_CHAIN_BYTES` or hold more
            than :data:`MAX_BLOCKS` blocks.
    """
    chain = text if is_chain(text) else PREFIX + text
    decoded = decode(chain)
    if len(decoded.blocks) >= MAX_BLOCKS:
        raise ChainError(f"a chain holds at most {MAX_BLOCKS} blocks")
    out = chain + SEPARATOR + sign_block(decoded.previous(len(decoded.blocks)), payload, key)
    if len(out) > MAX_CHAIN_BYTES:
        raise ChainError(f"the chain would exceed {MAX_CHAIN_BYTES} bytes")
    return out


def sign_block(previous: str, payload: bytes, key: nacl.signing.SigningKey) -> str:
    """The text of a block of ``payload`` chained to ``previous`` (the root's or the
    previous block's text), signed by ``key``."""
    signature = jws.sign_detached(signing_input(previous, payload), key)
    return b64url_encode(payload) + "." + b64url_encode(signature)


def decode(text: str, *, max_bytes: int = MAX_CHAIN_BYTES) -> DecodedChain:
    """Split a chain and parse every part (no signature is checked here).

    In order: size (before anything else), ASCII, the prefix, the root (a compact JWS
    whose payload is a JSON object), then each block: two strict base64url segments, a
    64-byte signature, a canonical payload with exactly the known members, each of its
    type and shape.

    Raises:
        ChainError: at the first failed step, category ``format``.
    """
    if not isinstance(text, str):
        raise ChainError("chain is not a string")
    if len(text) > max_bytes:
        raise ChainError("chain too large")
    if not text.isascii():
        raise ChainError("chain is not ASCII")
    if not text.startswith(PREFIX):
        raise ChainError("not an offline chain (prefix)")
    parts = text[len(PREFIX) :].split(SEPARATOR)
    root, blocks = parts[0], parts[1:]
    if len(blocks) > MAX_BLOCKS:
        raise ChainError(f"more than {MAX_BLOCKS} blocks")
    try:
        _, root_claims = jws.decode_unverified(root, max_bytes=max_bytes)
    except JWSError as exc:
        raise ChainError(f"root: {exc.reason}") from None
    return DecodedChain(text, root, root_claims, tuple(_block(b, i) for i, b in enumerate(blocks)))


def is_nested_name(holder: str, sub: str) -> bool:
    """Whether ``sub`` may name a delegate of ``holder``: ``holder + "/"`` followed by one
    or more SPIFFE path segments (1-128 of ``[A-Za-z0-9._-]``, neither ``.`` nor ``..``),
    within the format's 512 characters. The one naming rule of offline delegation: the
    issuance check of ``attenuate`` applies it to every block, wherever a chain is
    derived or verified."""
    if type(sub) is not str or _NAME.fullmatch(sub) is None:
        return False
    prefix = holder + "/"
    if not holder or not sub.startswith(prefix):
        return False
    return all(
        _SEGMENT.fullmatch(segment) is not None and segment not in (".", "..")
        for segment in sub[len(prefix) :].split("/")
    )


def delegate_name(holder: str, name: str) -> str:
    """The name a delegate of ``holder`` is given for ``name``: ``name`` itself when it is
    a full name (it holds ``://``) nested under ``holder``'s, ``holder/name`` for a bare
    label (one or more path segments).

    Raises:
        ValueError: the result would not be nested under ``holder`` (:func:`is_nested_name`).
    """
    full = name if isinstance(name, str) and "://" in name else f"{holder}/{name}"
    if not isinstance(name, str) or not is_nested_name(holder, full):
        raise ValueError(
            "an offline delegate's name must be nested under its delegator's: pass a label "
            "(1-128 of A-Z a-z 0-9 . - _ per '/'-separated segment) or a full name starting "
            f"with {holder + '/'!r}"
        )
    return full


def holder_key_of(claims: Mapping[str, Any]) -> bytes | None:
    """The raw Ed25519 key of a token's holder (its ``agent_jwk``), None if absent or bad."""
    jwk = claims.get("agent_jwk")
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return None
    x = jwk.get("x")
    try:
        raw = b64url_decode_for(x, "agent_jwk") if isinstance(x, str) else b""
    except JWSError:
        return None
    return raw if len(raw) == 32 else None


def _block(text: str, index: int) -> Block:
    where = f"block {index + 1}"
    payload_seg, dot, signature_seg = text.partition(".")
    if not dot or not payload_seg or not signature_seg or "." in signature_seg:
        raise ChainError(f"{where}: must be two segments")
    try:
        payload = b64url_decode_for(payload_seg, "payload")
        signature = b64url_decode_for(signature_seg, "signature")
    except JWSError as exc:
        raise ChainError(f"{where}: {exc.reason}") from None
    if len(signature) != jws.SIGNATURE_BYTES:
        raise ChainError(f"{where}: signature length")
    try:
        fields = _parse_payload(payload)
    except ChainError as exc:
        raise ChainError(f"{where}: {exc.reason}") from None
    return Block(**fields, signature=signature, payload=payload, text=text)


def _parse_payload(payload: bytes) -> dict[str, Any]:
    try:
        # Duplicate names cannot pass: the canonical re-encoding below would differ.
        raw = json_object(payload, "payload")
    except JWSError as exc:
        raise ChainError(exc.reason) from None
    names = set(raw)
    if not names >= _REQUIRED or not names <= _REQUIRED | _OPTIONAL:
        raise ChainError("payload members missing or unknown")
    if canonical_json(raw) != payload:
        raise ChainError("payload is not canonical JSON")
    sub, key, jti = raw["sub"], raw["key"], raw["jti"]
    if type(sub) is not str or _NAME.fullmatch(sub) is None:
        raise ChainError("sub malformed")
    if type(jti) is not str or _JTI.fullmatch(jti) is None:
        raise ChainError("jti malformed")
    if holds_secret(jti) or holds_credential(jti):
        # Revocable by its id like a token's, and the broker refuses a revocation target
        # shaped like a secret or a by-reference token: such a block could not be ended.
        raise ChainError("jti shaped like a secret or a token")
    try:
        key_bytes = b64url_decode_for(key, "key") if type(key) is str else b""
    except JWSError:
        key_bytes = b""
    if len(key_bytes) != 32:
        raise ChainError("key is not a base64url Ed25519 public key")
    for name in ("exp", "iat", "depth"):
        if type(raw[name]) is not int or raw[name] < 0:  # bool is not int here
            raise ChainError(f"{name} not a non-negative integer")
    for name in ("exp", "iat"):
        if raw[name] > MAX_SECONDS:
            raise ChainError(f"{name} out of range")
    if not 1 <= raw["depth"] <= 64:
        raise ChainError("depth out of range")
    return {
        "sub": sub,
        "key": key_bytes,
        "exp": raw["exp"],
        "iat": raw["iat"],
        "jti": jti,
        "depth": raw["depth"],
        "scope": _scope(raw["scope"]) if "scope" in raw else None,
        "grants": _grants(raw["grants"]) if "grants" in raw else None,
        "aud": _aud(raw["aud"]) if "aud" in raw else None,
    }


def _scope(value: object) -> tuple[str, ...]:
    if type(value) is not str:
        raise ChainError("scope not a string")
    if not value:
        return ()
    scopes = value.split(" ")
    if len(scopes) > MAX_SCOPES or any(parse_scope(s) is None for s in scopes):
        raise ChainError("scope malformed")
    if len(set(scopes)) != len(scopes):
        raise ChainError("scope lists a scope twice")
    return tuple(scopes)


def _grants(value: object) -> tuple[dict[str, Any], ...]:
    try:
        return grant_rules.parse_details(value, "grants")
    except grant_rules.GrantError as exc:
        raise ChainError(exc.reason) from None


def _aud(value: object) -> str:
    if type(value) is not str or _NAME.fullmatch(value) is None:
        raise ChainError("aud malformed")
    return value
