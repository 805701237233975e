"""``launch_token``: today's registration secret, the default attestor.

A launch token is a one-time (or counted) secret an orchestrator hands a new agent
(``core.launch``); the registration service looks it up and consumes it in the store
(``core.registration``). It proves only that the agent was handed the secret, not where
it runs; the other attestors prove that. It needs no configuration and cannot be added
by an operator; a registration that names no ``attestation`` uses it, exactly as before.
This module says what it is, for the registry of attestor types.
"""

from __future__ import annotations

from tasklease.rules.attest import LAUNCH_TOKEN

__all__ = ["TYPE", "refusal"]

TYPE = LAUNCH_TOKEN


def refusal(*, found: bool, expired: bool, uses: int, max_uses: int) -> str:
    """Why a looked-up launch token admits no registration ("" when it admits one)."""
    if not found:
        return "launch token not found"
    if expired:
        return "launch token expired"
    if uses >= max_uses:
        return "launch token already consumed"
    return ""
