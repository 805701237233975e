"""An offline credential is held only with its last delegate's key: a chain handed to
``b`` cannot be taken up with another agent's key (its proofs would be ``a``'s or
``c``'s, never the delegate's)."""

from __future__ import annotations

import pytest
from offline_support import hops, key

from tasklease.client import OfflineCredential, TaskleaseError


@pytest.mark.parametrize("holder", ["a", "c"])
def test_a_chain_is_held_only_with_its_last_delegates_key(holder: str) -> None:
    chain = hops(("a", "b"))
    assert OfflineCredential(chain, key("b")).chain == chain
    with pytest.raises(TaskleaseError) as refused:
        OfflineCredential(chain, key(holder))
    assert refused.value.code == "invalid_chain"
