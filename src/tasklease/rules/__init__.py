"""The rules every side applies, written once: the broker, the agent SDK and the verifier.

Standard library and PyNaCl only (msgspec is used when it is installed, never required),
so ``tasklease.client`` and ``tasklease.verify`` import them without the server's
dependencies. Pure functions: time comes in as ``now``.

=====================  =========================================================================
``rules.jws``          the compact EdDSA JWS codec, strict base64url and JSON, RFC 7638 key
                       thumbprints
``rules.claims``       claims after the signature: issuer, audience, ``exp`` (no leeway) and
                       ``nbf``/``iat`` (skew), lifetime, ``max_exp``, ``cnf`` shape,
                       delegation chain and its hash, the ``act`` chain, ``lineage``
``rules.scopes``       the scope grammar and coverage (narrowing only)
``rules.grants``       structured grants (RFC 9396 ``authorization_details``): types, limits,
                       narrowing per type
``rules.grantuse``     what a structured grant allows a resource server (a call's check)
``rules.binding``      holder binding: certificate (RFC 8705) and DPoP (RFC 9449) proofs
``rules.messages``     the domain-separated messages agents sign for the broker
``rules.bundle``       SPIFFE trust bundles (federation): parse strictly, serialize
``rules.wimse``        WIMSE workload identity and proof tokens (WIT, WPT): make and verify
``rules.cleartext``    where a credential may go over plain HTTP (loopback only, unless the
                       caller opts in)
``rules.controls``     the characters no line we write may hold as they are (C0, DEL, C1,
                       U+2028, U+2029, the bidi controls): what the audit sanitizer and the
                       CLI's listings mask
``rules.errors``       the exceptions the SDK and the verifier share: their roots and the one
                       ``InsufficientScope`` both export
=====================  =========================================================================
"""
