"""Sender-constrained tokens at the broker: the rules of :mod:`tasklease.rules.binding`.

Certificate binding (RFC 8705) and DPoP (RFC 9449) are checked by
``tasklease.rules.binding``, shared with the offline verifier. What is the broker's own is
:func:`cert_thumbprint_from_pem`, which parses the certificate a resource server sends
to ``/v1/token/validate`` as X.509 (``cryptography``).

The DPoP replay cache is the store's (:class:`StoreProofLedger`): a proof is single use
across every worker and replica sharing it (RFC 9449 section 11.1).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Sequence

from tasklease.core.audit import Guard, defer_guard, deferral_active
from tasklease.core.auditformat import AuditEntry
from tasklease.core.errors import TaskleaseError
from tasklease.core.kernel import Kernel
from tasklease.core.store import WriteTx
from tasklease.rules import jws
from tasklease.rules.binding import BindingError, DPoPVerifier, cert_thumbprint

__all__ = [
    "DPoPNonces",
    "DeferredProofs",
    "StoreProofLedger",
    "cert_thumbprint_from_pem",
    "recording",
]


class DPoPNonces:
    """Server-provided DPoP nonces (RFC 9449 sections 8 and 9), stateless.

    A nonce names a time slot of ``lifetime`` seconds and carries an HMAC of it under
    ``key`` (derived from the nonce secret the broker's replicas share, so any of them
    accepts any of theirs): base64url(8-byte slot || 16-byte tag). The current and the
    previous slot are accepted, so a nonce lives between one and two lifetimes; a proof
    pre-computed before that cannot be used (section 11.2).
    """

    _CONTEXT = b"tasklease-dpop-nonce-v1"

    def __init__(self, key: bytes, lifetime: int) -> None:
        self._key = key
        self._lifetime = max(1, lifetime)

    def _nonce(self, slot: int) -> str:
        body = struct.pack(">Q", slot)
        tag = hmac.new(self._key, self._CONTEXT + body, hashlib.sha256).digest()[:16]
        return jws.b64url_encode(body + tag)

    def issue(self, now: float) -> str:
        return self._nonce(int(now // self._lifetime))

    def check(self, nonce: str, now: float) -> bool:
        current = int(now // self._lifetime)
        return any(
            hmac.compare_digest(nonce.encode(), self._nonce(slot).encode())
            for slot in (current, current - 1)
        )


class StoreProofLedger:
    """The broker's :class:`~tasklease.rules.binding.ProofLedger`: DPoP proofs recorded
    in the store (``used_dpop_proofs``), group-committed like every write, and pruned once
    expired. A registration records its proof in its own transaction instead."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    def remember(self, key: str, expires_at: float, now: float) -> bool:
        first: list[bool] = []

        def unit(tx: WriteTx) -> Sequence[AuditEntry]:
            first.append(tx.consume_dpop_proof(key, expires_at))
            return ()

        self._kernel.commit(unit)
        return first[0]


class DeferredProofs:
    """A :class:`~tasklease.rules.binding.ProofLedger` that records nothing itself: it
    collects the proofs a request presents (``proofs``: key and expiry), for the request
    to record as used in the transaction of its audit events, before it is answered
    (``core.audit.Guard``). A proof used before is then refused at that point."""

    def __init__(self) -> None:
        self.proofs: list[tuple[str, float]] = []

    def remember(self, key: str, expires_at: float, now: float) -> bool:
        self.proofs.append((key, expires_at))
        return True

    def guards(
        self, refusal: Callable[[], tuple[TaskleaseError, AuditEntry] | Exception]
    ) -> list[Guard]:
        """One guard per proof collected: it records the proof as used, and ``refusal`` is
        what answers a request whose proof was recorded already."""

        def recording(key: str, expires_at: float) -> Guard:
            def write(tx: WriteTx) -> bool:
                return tx.consume_dpop_proof(key, expires_at)

            return Guard(write, refusal)

        return [recording(key, expires_at) for key, expires_at in self.proofs]

    def defer(self, refusal: Callable[[], tuple[TaskleaseError, AuditEntry] | Exception]) -> None:
        """Add :meth:`guards` to the request's ``core.audit.deferring``."""
        for guard in self.guards(refusal):
            defer_guard(guard)


def recording(verifier: DPoPVerifier, proof: str) -> tuple[DPoPVerifier, DeferredProofs | None]:
    """The verifier of a request's DPoP proof. Under ``core.audit.deferring`` it collects
    the proof instead of recording it (no commit here): the caller adds the guards that
    record it as used with the request's deferred audit events, before it is answered,
    refused or not (:meth:`DeferredProofs.defer`)."""
    if not proof or not deferral_active():
        return verifier, None
    deferred = DeferredProofs()
    verifying = DPoPVerifier(
        verifier.window, ledger=deferred, nonces=verifier.nonces, retain=verifier.retain
    )
    return verifying, deferred


def cert_thumbprint_from_pem(pem: str) -> str:
    """The ``x5t#S256`` of a PEM certificate (for resource servers calling validate).

    Raises:
        BindingError: not one parseable PEM certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise BindingError("presented certificate is not a PEM certificate") from None
    return cert_thumbprint(cert.public_bytes(Encoding.DER))
