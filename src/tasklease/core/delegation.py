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
from collections.abc import Callable

from nacl.signing import VerifyKey

from tasklease.core import _jws
from tasklease.core.tokens import DelegationRecord

__all__ = ["record_signing_input", "verify_chain_records"]


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
