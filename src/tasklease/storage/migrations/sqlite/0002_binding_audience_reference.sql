-- tasklease SQLite schema, version 2: zero-trust enforcement.
--
-- * launch_tokens.audience: the RFC 8707 resources a registration may name (JSON array;
--   '[]' means the broker's default audience).
-- * agents.cnf: the holder's proof-of-possession binding as compact JSON
--   ({"x5t#S256": ...} and/or {"jkt": ...}); '' for an unbound agent. Delegated tokens
--   are bound to the delegate's own cnf.
-- * reference_tokens: by-reference (opaque) tokens, issued instead of a JWT larger than
--   reference_token_threshold. Only the SHA-256 of the token is stored, with the claims
--   it stands for; rows are pruned after expires_at.

ALTER TABLE launch_tokens ADD COLUMN audience TEXT NOT NULL DEFAULT '[]';

ALTER TABLE agents ADD COLUMN cnf TEXT NOT NULL DEFAULT '';

CREATE TABLE reference_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,   -- sha256 hex, never the token
    kind       TEXT NOT NULL,               -- the JWT typ it stands for (at+jwt)
    claims     TEXT NOT NULL,               -- compact JSON claims
    jti        TEXT NOT NULL,
    expires_at REAL NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX reference_tokens_by_expires_at ON reference_tokens (expires_at);
