-- tasklease SQLite schema, version 24: the built-in admin's credential, as the broker last
-- started with it (core.adminsecret). One row for the whole database: the admin is not
-- per tenant. A start with another admin secret ends the tokens and launch tokens the
-- admin held before (a revocation entry on `admin`, level agent).
CREATE TABLE admin_credential (
    id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    secret_hash TEXT    NOT NULL,    -- argon2id, as in admin_secret_hash
    changed_at  REAL    NOT NULL     -- Unix seconds
) STRICT;
