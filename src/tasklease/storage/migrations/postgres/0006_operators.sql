-- tasklease PostgreSQL schema, version 6: the same change as sqlite/0006_operators.sql.
CREATE TABLE operators (
    name        text             NOT NULL PRIMARY KEY,
    role        text             NOT NULL,
    secret_hash text             NOT NULL,     -- argon2id, never the secret; '' for a key
    public_key  bytea            NOT NULL,     -- raw Ed25519 key; empty for a secret
    status      text             NOT NULL,     -- 'active' or 'removed'
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL,
    created_by  text             NOT NULL
);
