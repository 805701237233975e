"""Delegation records: who handed authority to whom, signed by the broker.

Each hop is a :class:`~tasklease.core.tokens.DelegationRecord` naming the delegator, the
scope it held and when it delegated. The broker signs (Ed25519, hex)::

    "tasklease-delegation-v1\\n" || JSON [agent, delegate, scope, delegated_at]

where ``delegate`` is the next hop's agent (or the token's subject for the last hop), so a
record cannot be lifted into another chain. ``chain_hash`` (SHA-256 over the records) is
checked on every validation; the per-hop signatures are checked whenever a chain is
extended and by :func:`verify_chain_records` for offline verifiers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from nacl.signing import VerifyKey

from tasklease.core.errors import InvalidRequest
from tasklease.core.tokens import DelegationRecord
from tasklease.rules import jws as _jws
from tasklease.rules.auditchain import principal_ref
from tasklease.rules.principals import creator_kind

__all__ = [
    "PRINCIPAL_MAX_CHARS",
    "named_principal",
    "principal_ref",
    "record_signing_input",
    "validate_principal",
    "verify_chain_records",
]

PRINCIPAL_MAX_CHARS = 256
# kind:value, e.g. user:alice@example.com, svc:billing, spiffe://td/ns/x. Printable ASCII
# without spaces: no control characters can reach tokens, logs or the audit trail.
_PRINCIPAL = re.compile(r"[a-z][a-z0-9-]{0,31}:[\x21-\x7e]+")


def validate_principal(value: object) -> str:
    """The principal a launch token is created for: ``kind:value``, at most 256 chars.

    Raises:
        InvalidRequest: not a string of that grammar.
    """
    if not isinstance(value, str) or len(value) > PRINCIPAL_MAX_CHARS:
        raise InvalidRequest(
            f"principal must be a string of at most {PRINCIPAL_MAX_CHARS} characters"
        )
    if _PRINCIPAL.fullmatch(value) is None:
        raise InvalidRequest(
            "principal must be kind:value (kind lowercase letters, digits and hyphens; "
            "value printable ASCII without spaces), e.g. user:alice@example.com"
        )
    return value


def named_principal(value: object) -> str:
    """A principal a creator names for its agents (a launch token's, an attestor policy's
    rule's): ``kind:value`` (:func:`validate_principal`), and no creator identity
    (``rules.principals``): those the broker derives itself, from who made the launch
    token or configured the attestor.

    Raises:
        InvalidRequest: malformed, or of a creator's kind (``admin``, ``operator``,
            ``app``, ``attestor``).
    """
    principal = validate_principal(value)
    kind = creator_kind(principal)
    if kind:
        raise InvalidRequest(
            f"principal may not name a creator ({kind}): name the human the agents work for",
            hint="leave principal out and the creator is the principal",
        )
    return principal


# principal_ref (rules.auditchain): a principal's pseudonym in the audit log, which the
# SDK computes too (tasklease audit events --principal).


def record_signing_input(
    agent: str, delegate: str, scope: tuple[str, ...], delegated_at: str
) -> bytes:
    body = json.dumps([agent, delegate, list(scope), delegated_at], separators=(",", ":"))
    return b"tasklease-delegation-v1\n" + body.encode("utf-8")


def verify_chain_records(
    chain: tuple[DelegationRecord, ...],
    subject: str,
    verify_keys: Callable[[], list[VerifyKey]],
) -> bool:
    """True iff every record carries a valid broker signature for its position."""
    keys = verify_keys()
    for i, record in enumerate(chain):
        delegate = chain[i + 1].agent if i + 1 < len(chain) else subject
        message = record_signing_input(record.agent, delegate, record.scope, record.delegated_at)
        try:
            signature = bytes.fromhex(record.signature)
        except ValueError:
            return False
        if not any(_jws.verify_detached(message, signature, key) for key in keys):
            return False
    return True
