"""The root of an offline chain: the broker's token, its claims read for the issuance check.

Read by the shared readers (``rules.claims``) into the shape :meth:`Parent.of_token
<tasklease.rules.issuance.Parent.of_token>` and the claim rules read; remembered by the
token's text, so a holder deriving many blocks, or a verifier seeing many chains from one
root, reads it once. Whether the root is genuine is :mod:`tasklease.rules.chainverify`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasklease.rules.attenuation import ChainError
from tasklease.rules.claims import (
    ClaimRejected,
    DelegationRecord,
    delegation_chain_of,
    holder_of,
    int_claim,
    lineage_of,
    scope_claim,
    string_claim,
    strings_claim,
)
from tasklease.rules.grants import GrantError, details_of

__all__ = ["ChainRejected", "RootClaims", "root_claims_of"]


class ChainRejected(ChainError):
    """A chain was refused by a verification check (``reason``/``category`` as
    :class:`~tasklease.rules.attenuation.ChainError`)."""


@dataclass(frozen=True, slots=True)
class RootClaims:
    """A root token's claims as :meth:`Parent.of_token` reads them."""

    sub: str
    scope: tuple[str, ...]
    aud: tuple[str, ...]
    principal: str
    lineage: tuple[str, ...]
    oiat: int
    max_exp: int
    exp: int
    iat: int
    nbf: int
    rnc: int
    delegation_chain: tuple[DelegationRecord, ...]
    chain_hash: str
    iss: str
    jti: str
    grant: str
    task_id: str
    raw: dict[str, Any]
    details: tuple[Mapping[str, Any], ...]

    @property
    def grant_id(self) -> str:
        return self.grant or self.jti


def root_claims_of(payload: dict[str, Any], text: str = "") -> RootClaims:
    """The root token's claims, typed by the shared readers (``rules.claims``).

    ``text``, the root token as sent, lets the reading be remembered: a holder derives
    many blocks from one token, and a resource server sees many chains from one root.
    (The signature is checked by the caller at every use; only the reading is kept.)

    Raises:
        ChainRejected: a claim is missing or malformed (category ``claims``).
    """
    if text:
        found = _ROOTS.get(text)
        if found is not None:
            return found
    root = _read_root(payload)
    if text:
        if len(_ROOTS) >= _ROOTS_MAX:
            _ROOTS.clear()
        _ROOTS[text] = root
    return root


_ROOTS: dict[str, RootClaims] = {}
_ROOTS_MAX = 256


def _read_root(payload: dict[str, Any]) -> RootClaims:
    try:
        iat = int_claim(payload, "iat")
        return RootClaims(
            sub=holder_of(payload),
            scope=scope_claim(payload),
            aud=strings_claim(payload, "aud"),
            principal=string_claim(payload, "principal", required=False),
            lineage=lineage_of(payload["lineage"]) if "lineage" in payload else (),
            oiat=int_claim(payload, "oiat", iat),
            max_exp=int_claim(payload, "max_exp", 0),
            exp=int_claim(payload, "exp"),
            iat=iat,
            nbf=int_claim(payload, "nbf", iat),
            rnc=int_claim(payload, "rnc", 0),
            delegation_chain=delegation_chain_of(payload.get("delegation_chain", [])),
            chain_hash=string_claim(payload, "chain_hash", required=False),
            iss=string_claim(payload, "iss", required=False),
            jti=string_claim(payload, "jti", required=True),
            grant=string_claim(payload, "grant", required=False),
            task_id=string_claim(payload, "task_id", required=False),
            raw=payload,
            details=details_of(payload),
        )
    except ClaimRejected as exc:
        raise ChainRejected(f"root: {exc.reason}", "claims") from None
    except GrantError as exc:
        raise ChainRejected(f"root: authorization_details: {exc.reason}", "claims") from None
