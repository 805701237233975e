-- tasklease SQLite schema, version 1.
--
-- Conventions: times are REAL Unix seconds (revocations.revoked_at is INTEGER whole
-- seconds, as in RevocationRecord); scope lists are JSON arrays stored as TEXT; booleans
-- are INTEGER 0/1. Tables are STRICT so a wrong type is an error, not a silent coercion.
-- The schema_version table is created by the migration runner, not here: it must exist
-- before the first migration can be recorded.

CREATE TABLE apps (
    app_id      TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    client_id   TEXT    NOT NULL UNIQUE,
    secret_hash TEXT    NOT NULL,      -- argon2id, never the secret
    scopes      TEXT    NOT NULL,      -- JSON array of scope strings
    token_ttl   INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL,
    created_by  TEXT    NOT NULL
) STRICT;

-- list_apps is newest first.
CREATE INDEX apps_by_created_at ON apps (created_at, app_id);

CREATE TABLE launch_tokens (
    token_hash    TEXT    NOT NULL PRIMARY KEY,   -- sha256 hex, never the token
    agent_name    TEXT    NOT NULL,
    allowed_scope TEXT    NOT NULL,               -- JSON array
    max_ttl       INTEGER NOT NULL,
    single_use    INTEGER NOT NULL CHECK (single_use IN (0, 1)),
    created_at    REAL    NOT NULL,
    expires_at    REAL    NOT NULL,
    created_by    TEXT    NOT NULL,
    app_id        TEXT    NOT NULL DEFAULT '',    -- '' when an admin created it
    consumed_at   REAL                            -- NULL until a single-use token is used
) STRICT;

CREATE INDEX launch_tokens_by_expires_at ON launch_tokens (expires_at);

CREATE TABLE used_nonces (
    nonce_hash TEXT NOT NULL PRIMARY KEY,
    expires_at REAL NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX used_nonces_by_expires_at ON used_nonces (expires_at);

CREATE TABLE agents (
    agent_id      TEXT    NOT NULL PRIMARY KEY,   -- SPIFFE ID
    public_key    BLOB    NOT NULL,               -- raw 32-byte Ed25519 key
    orch_id       TEXT    NOT NULL,
    task_id       TEXT    NOT NULL,
    scope         TEXT    NOT NULL,               -- JSON array
    app_id        TEXT    NOT NULL,
    client_id     TEXT    NOT NULL,
    registered_at REAL    NOT NULL,
    status        TEXT    NOT NULL
) STRICT;

-- seq is AUTOINCREMENT so a value is never handed out twice, even after the row holding
-- the highest seq was pruned: a replica polling revocations_since(last_seen) must never
-- see a new entry reuse a number it has already passed. An extended entry is deleted
-- and inserted again to get a fresh, larger seq.
CREATE TABLE revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    level      TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    revoked_at INTEGER NOT NULL,
    expires_at REAL    NOT NULL,
    UNIQUE (level, target)
) STRICT;

CREATE INDEX revocations_by_expires_at ON revocations (expires_at);

-- seq is assigned by the core (head + 1, read under the write lock), so no AUTOINCREMENT.
-- ts is the RFC 3339 timestamp parsed to Unix seconds for since/until range filters.
CREATE TABLE audit_events (
    seq              INTEGER PRIMARY KEY,
    timestamp        TEXT    NOT NULL,
    ts               REAL    NOT NULL,
    event_type       TEXT    NOT NULL,
    agent_id         TEXT    NOT NULL,
    task_id          TEXT    NOT NULL,
    orch_id          TEXT    NOT NULL,
    detail           TEXT    NOT NULL,
    resource         TEXT    NOT NULL,
    outcome          TEXT    NOT NULL,
    deleg_depth      INTEGER NOT NULL,
    deleg_chain_hash TEXT    NOT NULL,
    request_id       TEXT    NOT NULL,
    prev_hash        TEXT    NOT NULL,
    hash             TEXT    NOT NULL
) STRICT;

-- Each filter index ends in seq (implicitly, as the rowid) so a filtered query returns
-- rows already in seq order without a sort.
CREATE INDEX audit_events_by_event_type ON audit_events (event_type);
CREATE INDEX audit_events_by_agent_id   ON audit_events (agent_id);
CREATE INDEX audit_events_by_task_id    ON audit_events (task_id);
CREATE INDEX audit_events_by_outcome    ON audit_events (outcome);
CREATE INDEX audit_events_by_ts         ON audit_events (ts);
