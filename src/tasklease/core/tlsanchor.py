"""The trust anchor of an HTTPS connection the broker makes to a server another party runs:
a federated domain's bundle endpoint and revocation feed, an attestation issuer's keys.

An operator gives the anchor as ``ca_pem``, PEM CA certificates (``--ca-file``), or
nothing for the system's trust store. One rule says what that text trusts, here, and it is
applied both where the text is given (a declaration that does not make a context is
refused) and where it is used (a stored one that cannot is a failed fetch, never a crash):
the certificates the PEM blocks hold, and nothing else of the text. A file's comments
outside the blocks (distributions' bundles name each CA, in any language) are not
OpenSSL's business: it is handed the certificates written out again as PEM, ASCII only,
so a non-ASCII comment neither makes ``ssl`` raise ``TypeError`` nor changes what is
trusted. Not DER: OpenSSL's DER reader ends without an error of its own, and ``ssl`` then
takes whatever error an earlier operation of the thread left behind (a PKCS#11 engine's,
say) for a failure to load the certificates.
"""

from __future__ import annotations

import functools
import ssl

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["UnusableAnchor", "anchor_context"]


class UnusableAnchor(ValueError):
    """``ca_pem`` holds no certificate a TLS context can trust; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@functools.lru_cache(maxsize=64)
def anchor_context(ca_pem: str) -> ssl.SSLContext:
    """The client context checking a server against ``ca_pem`` ("" for the system's trust
    store): its certificate must chain to one of them and name the host, TLS 1.2 at least.

    Raises:
        UnusableAnchor: ``ca_pem`` holds no PEM certificate, or one OpenSSL refuses.
    """
    cadata: str | None = None
    if ca_pem:
        try:
            certificates = x509.load_pem_x509_certificates(ca_pem.encode("utf-8", "replace"))
        except ValueError:
            certificates = []
        if not certificates:
            raise UnusableAnchor("ca_pem holds no PEM certificate")
        cadata = "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in certificates)
    try:
        context = ssl.create_default_context(cadata=cadata)
    except (ssl.SSLError, ValueError, TypeError) as exc:
        raise UnusableAnchor(f"ca_pem cannot be used: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
