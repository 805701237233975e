# Would fail if: a proof or an event of the wrong JSON shape (null, a number, a list for
# an object), as a broker or a bundle may hand one, made `tasklease.verify`'s audit
# checks raise a TypeError or AttributeError (a traceback in `tasklease audit prove` and
# `audit verify --url`) rather than their AuditProofError.
"""The audit proof checks refuse what is not a proof or an event as not verifying."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.rules.note import Checkpoint
from tasklease.verify import AuditProofError, verify_event_inclusion, verify_log_consistency

OLD = Checkpoint("log.example", 1, b"\x01" * 32)
NEW = Checkpoint("log.example", 2, b"\x02" * 32)


@pytest.mark.parametrize("proof", [None, 5, 1.5, True])
def test_a_proof_that_is_no_list_does_not_verify(proof: Any) -> None:
    with pytest.raises(AuditProofError) as refused:
        verify_log_consistency(OLD, NEW, proof)
    assert refused.value.reason == "a proof is a list of hashes"
    with pytest.raises(AuditProofError):
        verify_event_inclusion({}, proof, NEW)


@pytest.mark.parametrize("event", [None, [], "evt-000001", 1])
def test_an_event_that_is_no_object_does_not_verify(event: Any) -> None:
    with pytest.raises(AuditProofError) as refused:
        verify_event_inclusion(event, [], NEW)
    assert refused.value.reason == "an event is a JSON object"
