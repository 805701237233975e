"""Identifiers are checked whole: a trailing newline is not part of any of their shapes.

Python's ``$`` also matches before a final newline, so ``re.match(r"^...$", "task-1\\n")``
accepts it. Every shape check here uses ``fullmatch``.

Would fail if: an ``orch_id`` or ``task_id`` with a newline became a segment of a SPIFFE
ID (its tokens and the audit log), an app or operator could be named with one, or a
registration nonce with one passed its check (bytes.fromhex ignores the newline, while
the nonce's single use is counted on its text: the same challenge would be spent twice).
"""

from __future__ import annotations

import pytest

from tasklease.core.broker import Broker
from tasklease.core.errors import InvalidRequest, TaskleaseError
from tasklease.core.identity import NonceIssuer
from tasklease.core.operators import operator_name
from tasklease.core.spiffe import parse_agent_id, validate_segment, validate_trust_domain

from .conftest import CTX, Kit


def test_a_spiffe_segment_or_trust_domain_with_a_newline_is_refused() -> None:
    assert validate_segment("task-1", field="task_id") == "task-1"
    with pytest.raises(InvalidRequest, match="invalid task_id"):
        validate_segment("task-1\n", field="task_id")
    with pytest.raises(ValueError, match="invalid SPIFFE trust domain"):
        validate_trust_domain("example.org\n")
    agent = "spiffe://example.org/agent/orch/task/i1"
    assert parse_agent_id(agent) is not None
    assert parse_agent_id(agent + "\n") is None


def test_a_registration_with_a_newline_in_its_task_is_refused(broker: Broker, kit: Kit) -> None:
    launch = kit.launch(broker)
    args, _ = kit.register_args(broker, launch, task_id="task-1\n")
    with pytest.raises(InvalidRequest, match="invalid task_id"):
        broker.register(**args)


def test_an_app_or_operator_named_with_a_newline_is_refused(broker: Broker, kit: Kit) -> None:
    with pytest.raises(InvalidRequest, match="invalid app name"):
        broker.register_app(
            kit.admin(broker).claims, name="billing\n", scopes=["read:x:*"], token_ttl=None, ctx=CTX
        )
    assert operator_name("ops") == "ops"
    with pytest.raises(InvalidRequest, match="invalid operator name"):
        operator_name("ops\n")


def test_a_nonce_with_a_newline_is_not_the_nonce() -> None:
    issuer = NonceIssuer(b"s" * 32, ttl=30)
    nonce = issuer.issue(1_000.0)
    assert issuer.check(nonce, 1_000.0) == 1_030
    for altered in (nonce + "\n", nonce.upper()):
        with pytest.raises(TaskleaseError, match="64 lowercase hex"):
            issuer.check(altered, 1_000.0)
