"""Principals: the human an agent works for, and the creator identities no one may name.

A launch token's ``principal`` is ``kind:value`` (``user:alice@example.com``); when a
launch token names none, the broker derives it from whoever created it or admitted the
agent: ``admin``, ``operator:<name>``, ``app:<app_id>`` or ``attestor:<name>``. Those
creator identities are the broker's to derive, never a caller's to name: an app naming
``app:<another app>`` or ``operator:root`` would have its agents' work traced, in every
token and audit event, to a creator that never launched them.
"""

from __future__ import annotations

__all__ = ["CREATOR_KINDS", "creator_kind", "human_principal"]

CREATOR_KINDS = ("admin", "operator", "app", "attestor", "fed")
"""The kinds of the principals the broker derives from a creator (docs/agents.md), and
from a federated domain's own creator identities (``fed:<domain>:...``)."""


def creator_kind(principal: str) -> str:
    """The creator kind ``principal`` names (``admin``, ``operator``, ``app``,
    ``attestor``), or "" when it names none and a caller may name it."""
    kind = principal.partition(":")[0]
    return kind if kind in CREATOR_KINDS else ""


def human_principal(principal: str) -> str:
    """``principal`` when it names a human (the chain ends at that human, across any
    number of trust domains), "" for a creator identity or none."""
    return principal if principal and not creator_kind(principal) else ""
