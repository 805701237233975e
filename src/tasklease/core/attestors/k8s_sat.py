"""``k8s_sat``: a Kubernetes projected service-account token, verified offline.

The pod asks the kubelet for a token whose audience is the broker (a projected volume
with ``audience: <the broker's issuer>``) and presents it. The token is a JWT signed by the
cluster's service-account issuer (RS256, or ES256/384/512 for an EC key), verified against
the issuer's JWKS: given by configuration (``kubectl get --raw /openid/v1/jwks``) or fetched
from the issuer's OIDC discovery document. Claims (kubernetes ``pkg/serviceaccount``):
``sub`` ``system:serviceaccount:<namespace>:<name>``, and ``kubernetes.io`` with
``namespace``, ``serviceaccount{name,uid}``, ``pod{name,uid}``, ``node{name,uid}``.

Only pod-bound tokens are accepted unless ``require_pod`` is false: a secret-bound token
(``secret`` in place of ``pod``) is a long-lived secret, which is what attestation is
meant to replace. An offline check accepts a token until its ``exp`` even after its pod
is gone (Kubernetes prefers TokenReview for that); keep ``expirationSeconds`` short.

Settings: ``issuer`` (required), ``cluster`` (a label carried as the fact ``cluster``;
default the attestor's name), ``jwks`` | ``jwks_uri`` | discovery, ``ca_pem``,
``jwks_refresh``, ``jwks_max_stale``, ``max_age``, ``require_pod``.
Facts: ``cluster``, ``namespace``, ``service_account``, ``service_account_uid``, ``pod``,
``pod_uid``, ``node``, ``node_uid``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasklease.core.attestors._jwt import check_claims, verify_with_refresh
from tasklease.core.attestors.base import (
    DEFAULT_MAX_AGE,
    AttestationRefused,
    Attested,
    JwksSource,
    Keys,
    SettingsError,
    VerifyContext,
    jwks_source,
    seconds,
    text,
)

__all__ = ["ATTESTOR", "K8sSettings"]

TYPE = "k8s_sat"
ALGORITHMS = ("RS256", "ES256", "ES384", "ES512")
_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True, slots=True)
class K8sSettings:
    issuer: str
    cluster: str
    source: JwksSource
    max_age: int
    require_pod: bool


def _name_uid(section: object, what: str) -> tuple[str, str]:
    if section is None:
        return "", ""
    if not isinstance(section, dict):
        raise AttestationRefused(f"kubernetes.io.{what} malformed", "claims")
    name, uid = section.get("name", ""), section.get("uid", "")
    if not isinstance(name, str) or not isinstance(uid, str) or len(name) + len(uid) > 300:
        raise AttestationRefused(f"kubernetes.io.{what} malformed", "claims")
    return name, uid


class K8sServiceAccountAttestor:
    """The ``k8s_sat`` attestor."""

    type = TYPE

    def settings(self, raw: Mapping[str, Any]) -> K8sSettings:
        issuer = text(raw, "issuer", required=True)
        require_pod = raw.get("require_pod", True)
        if not isinstance(require_pod, bool):
            raise SettingsError("require_pod must be true or false")
        return K8sSettings(
            issuer=issuer,
            cluster=text(raw, "cluster", limit=64),
            source=jwks_source(raw, issuer),
            max_age=seconds(raw, "max_age", DEFAULT_MAX_AGE),
            require_pod=require_pod,
        )

    def issuer_of(self, settings: K8sSettings) -> str:
        return settings.issuer

    def source(self, settings: K8sSettings) -> JwksSource:
        return settings.source

    def verify(
        self, evidence: str, settings: K8sSettings, keys: Keys, ctx: VerifyContext
    ) -> Attested:
        token = verify_with_refresh(evidence, keys, algorithms=ALGORITHMS)
        claims = token.claims
        valid_until = check_claims(
            claims,
            issuer=settings.issuer,
            audience=ctx.audience,
            now=ctx.now,
            skew=ctx.skew,
            max_age=settings.max_age,
        )
        sub = claims.get("sub")
        info = claims.get("kubernetes.io")
        if not isinstance(sub, str) or not sub.startswith(_PREFIX) or not isinstance(info, dict):
            raise AttestationRefused("not a service-account token", "claims")
        namespace = info.get("namespace")
        account, account_uid = _name_uid(info.get("serviceaccount"), "serviceaccount")
        pod, pod_uid = _name_uid(info.get("pod"), "pod")
        node, node_uid = _name_uid(info.get("node"), "node")
        if not isinstance(namespace, str) or sub != f"{_PREFIX}{namespace}:{account}":
            raise AttestationRefused("sub disagrees with kubernetes.io", "claims")
        if settings.require_pod and not (pod and pod_uid):
            raise AttestationRefused("token not bound to a pod", "claims")
        facts = {
            "cluster": settings.cluster or ctx.attestor,
            "namespace": namespace,
            "service_account": account,
            "service_account_uid": account_uid,
            "pod": pod,
            "pod_uid": pod_uid,
            "node": node,
            "node_uid": node_uid,
        }
        return Attested(
            type=TYPE,
            attestor=ctx.attestor,
            issuer=settings.issuer,
            subject=sub,
            facts={k: v for k, v in facts.items() if v},
            valid_until=valid_until,
            replay_key=token.replay_key,
            digest=token.digest[:12],
        )


ATTESTOR = K8sServiceAccountAttestor()
