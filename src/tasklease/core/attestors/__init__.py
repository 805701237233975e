"""Workload attestors: plug-ins that verify evidence of where an agent runs.

    from tasklease.core.attestors import ATTESTORS, AttestationRefused

    attestor = ATTESTORS["k8s_sat"]
    settings = attestor.settings(raw_config)        # SettingsError if malformed
    attested = attestor.verify(evidence, settings, keys, ctx)   # AttestationRefused

The interface is :mod:`~tasklease.core.attestors.base`; each type is a module of its own
(``k8s_sat``, ``jwt_svid``, ``oidc``; ``launch_token`` is the default registration path).
The service that uses them (configuration, replay, policy, registration) is
:mod:`tasklease.core.attestation`. See docs/attestation.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from tasklease.core.attestors import jwt_svid, k8s_sat, launch_token, oidc
from tasklease.core.attestors._jwt import (
    VerifyKey,
    evidence_hash,
    keys_from_jwks,
    parse_jwks,
    unverified_claims,
)
from tasklease.core.attestors.base import (
    AttestationRefused,
    Attested,
    Attestor,
    JwksSource,
    Keys,
    SettingsError,
    VerifyContext,
)

__all__ = [
    "ATTESTORS",
    "LAUNCH_TOKEN",
    "AttestationRefused",
    "Attested",
    "Attestor",
    "JwksSource",
    "Keys",
    "SettingsError",
    "VerifyContext",
    "VerifyKey",
    "evidence_hash",
    "keys_from_jwks",
    "parse_jwks",
    "unverified_claims",
]

ATTESTORS: Mapping[str, Attestor] = MappingProxyType(
    {
        k8s_sat.TYPE: k8s_sat.ATTESTOR,
        jwt_svid.TYPE: jwt_svid.ATTESTOR,
        oidc.TYPE: oidc.ATTESTOR,
    }
)
"""The attestor types an operator can configure, by name."""

LAUNCH_TOKEN = launch_token.TYPE
