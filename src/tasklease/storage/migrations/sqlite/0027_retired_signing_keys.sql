-- tasklease SQLite schema, version 27: the signing keys retired (core.signing), by kid.
-- Written with the signing_key_retired event; every process reads it at each key refresh
-- and at start-up, and trusts no key listed here, whatever its key directory still holds
-- (a replica with a copy of its own).
CREATE TABLE retired_signing_keys (
    tenant_id  TEXT NOT NULL,
    kid        TEXT NOT NULL,
    retired_at REAL NOT NULL,     -- Unix seconds
    PRIMARY KEY (tenant_id, kid)
) STRICT;
