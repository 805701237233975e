-- tasklease PostgreSQL schema, version 2: zero-trust enforcement.
-- The same changes as sqlite/0002_binding_audience_reference.sql.
--
-- * launch_tokens.audience: the RFC 8707 resources a registration may name ('{}' means
--   the broker's default audience).
-- * agents.cnf: the holder's proof-of-possession binding as compact JSON; '' for an
--   unbound agent.
-- * reference_tokens: by-reference (opaque) tokens; only the SHA-256 of the token is
--   stored, with the claims it stands for; rows are pruned after expires_at.

ALTER TABLE launch_tokens ADD COLUMN audience text[] NOT NULL DEFAULT '{}';

ALTER TABLE agents ADD COLUMN cnf text NOT NULL DEFAULT '';

CREATE TABLE reference_tokens (
    token_hash text             NOT NULL PRIMARY KEY,   -- sha256 hex, never the token
    kind       text             NOT NULL,               -- the JWT typ it stands for
    claims     text             NOT NULL,               -- compact JSON claims
    jti        text             NOT NULL,
    expires_at double precision NOT NULL
);

CREATE INDEX reference_tokens_by_expires_at ON reference_tokens (expires_at);
