"""The compact EdDSA JWS codec, under its old name: it lives in :mod:`tasklease.rules.jws`.

Kept only while modules and tests outside the codec's own still import it from here;
new code imports ``tasklease.rules.jws``.
"""

from tasklease.rules.jws import (
    ALGORITHM,
    MAX_TOKEN_BYTES,
    Decoded,
    JWSError,
    b64url_decode,
    b64url_encode,
    decode,
    decode_embedded_key,
    decode_parts,
    decode_unverified,
    encode,
    jwk_thumbprint,
    sign_detached,
    verify_detached,
)

__all__ = [
    "ALGORITHM",
    "MAX_TOKEN_BYTES",
    "Decoded",
    "JWSError",
    "b64url_decode",
    "b64url_encode",
    "decode",
    "decode_embedded_key",
    "decode_parts",
    "decode_unverified",
    "encode",
    "jwk_thumbprint",
    "sign_detached",
    "verify_detached",
]
