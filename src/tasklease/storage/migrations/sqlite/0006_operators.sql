-- tasklease SQLite schema, version 6: named operators, each with a credential of its own
-- and a role (docs/security.md, "Operators and roles"). The credential is an argon2id
-- hash of a secret or a raw 32-byte Ed25519 public key; the other column is empty. A
-- removed operator keeps its row, credential emptied, so its name is never reused.
CREATE TABLE operators (
    name        TEXT NOT NULL PRIMARY KEY,
    role        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,     -- argon2id, never the secret; '' for a key
    public_key  BLOB NOT NULL,     -- raw Ed25519 key; empty for a secret
    status      TEXT NOT NULL,     -- 'active' or 'removed'
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    created_by  TEXT NOT NULL
) STRICT;
