"""Attestation's I/O: fetching issuers' signing keys (OIDC discovery and JWKS) over HTTPS.

The attestors, their configuration, replay and policy live in the core
(:mod:`tasklease.core.attestation`, :mod:`tasklease.core.attestors`); this adapter only
fetches keys, caches them, refreshes them and says when they are too old to trust
(fail closed). See docs/attestation.md.
"""

from tasklease.attestation.keys import FetchError, HttpKeyFetcher, fetch_jwks

__all__ = ["FetchError", "HttpKeyFetcher", "fetch_jwks"]
