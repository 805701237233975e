"""Sender-constrained tokens at the broker: the rules of :mod:`tasklease.rules.binding`.

Certificate binding (RFC 8705) and DPoP (RFC 9449) are checked by
``tasklease.rules.binding``, shared with the offline verifier. What is the broker's own is
:func:`cert_thumbprint_from_pem`, which parses the certificate a resource server sends
to ``/v1/token/validate`` as X.509 (``cryptography``).

The DPoP replay cache is per process: see docs/security.md for what that means with
several workers.
"""

from __future__ import annotations

from tasklease.rules.binding import BindingError, cert_thumbprint

__all__ = ["cert_thumbprint_from_pem"]


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
