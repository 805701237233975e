"""Requiring attested facts: a resource server accepts only workloads that proved them.

    token = verifier.verify(bearer)
    require_attested(token, {"namespace": "billing", "image_digest": "sha256:ab12*"})

Only attested facts count (``attest.facts``, and ``type``, ``attestor``, ``iss``,
``sub``); what the agent merely declared (``attest.declared``: model, runtime, SDK) never
satisfies a requirement. Patterns are equality or a glob (``*``, ``?``), as the broker's
attestation policies use them (``tasklease.rules.attest``).
"""

from __future__ import annotations

from collections.abc import Mapping

from tasklease.rules.attest import Attestation, facts_match
from tasklease.verify._claims import VerifiedToken
from tasklease.verify._errors import InsufficientScope

__all__ = ["require_attested"]


def require_attested(token: VerifiedToken, facts: Mapping[str, str]) -> Attestation:
    """The token's attestation when it has every fact of ``facts`` matching its pattern.

    Raises:
        InsufficientScope: the token was not attested, or a fact is missing or differs
            (403: the token is valid, it only lacks the authority). ``required`` names the
            first fact that failed.
        InvalidToken: the token's ``attest`` claim is malformed.
    """
    attestation = token.attestation
    if attestation is not None and not attestation.proved:
        attestation = None  # a launch-token agent's claim: declared facts only
    missed = facts_match(facts, attestation)
    if attestation is None or missed is not None:
        name = missed or next(iter(facts), "attest")
        why = "token not attested" if attestation is None else f"attested fact {name} missing"
        raise InsufficientScope(why, required=f"attest:{name}")
    return attestation
