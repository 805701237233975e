-- Tenants: every row belongs to one tenant (tenant_id), and every key and index starts
-- with it. The rows that existed before belong to the default tenant ('default').
-- SQLite cannot change a table's keys in place, so each table is made anew under a
-- temporary name, filled, and renamed (the sequence of revocation seqs carries over).

CREATE TABLE tenants (
    name         TEXT NOT NULL PRIMARY KEY,   -- the id in URLs (/t/<name>) and rows
    trust_domain TEXT NOT NULL UNIQUE,        -- its SPIFFE trust domain
    status       TEXT NOT NULL,               -- 'active' or 'removed'
    created_at   REAL NOT NULL,
    created_by   TEXT NOT NULL,
    removed_at   REAL                         -- NULL while active
) STRICT;

CREATE TABLE apps_new (
    tenant_id   TEXT    NOT NULL,
    app_id      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    client_id   TEXT    NOT NULL,
    secret_hash TEXT    NOT NULL,      -- argon2id, never the secret
    scopes      TEXT    NOT NULL,      -- JSON array of scope strings
    token_ttl   INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL,
    created_by  TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, app_id),
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, client_id)
) STRICT;
INSERT INTO apps_new SELECT 'default', app_id, name, client_id, secret_hash, scopes,
    token_ttl, status, created_at, updated_at, created_by FROM apps;
DROP TABLE apps;
ALTER TABLE apps_new RENAME TO apps;
CREATE INDEX apps_by_created_at ON apps (tenant_id, created_at, app_id);

CREATE TABLE launch_tokens_new (
    tenant_id     TEXT    NOT NULL,
    token_hash    TEXT    NOT NULL,               -- sha256 hex, never the token
    agent_name    TEXT    NOT NULL,
    allowed_scope TEXT    NOT NULL,               -- JSON array
    max_ttl       INTEGER NOT NULL,
    single_use    INTEGER NOT NULL CHECK (single_use IN (0, 1)),
    created_at    REAL    NOT NULL,
    expires_at    REAL    NOT NULL,
    created_by    TEXT    NOT NULL,
    app_id        TEXT    NOT NULL DEFAULT '',    -- '' when an admin created it
    consumed_at   REAL,                           -- when the last use was taken
    audience      TEXT    NOT NULL DEFAULT '[]',
    principal     TEXT    NOT NULL DEFAULT '',
    max_uses      INTEGER NOT NULL DEFAULT 1,
    uses          INTEGER NOT NULL DEFAULT 0,
    allow_resume  INTEGER NOT NULL DEFAULT 1 CHECK (allow_resume IN (0, 1)),
    PRIMARY KEY (tenant_id, token_hash)
) STRICT;
INSERT INTO launch_tokens_new SELECT 'default', token_hash, agent_name, allowed_scope,
    max_ttl, single_use, created_at, expires_at, created_by, app_id, consumed_at, audience,
    principal, max_uses, uses, allow_resume FROM launch_tokens;
DROP TABLE launch_tokens;
ALTER TABLE launch_tokens_new RENAME TO launch_tokens;
CREATE INDEX launch_tokens_by_expires_at ON launch_tokens (tenant_id, expires_at);

CREATE TABLE used_nonces_new (
    tenant_id  TEXT NOT NULL,
    nonce_hash TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, nonce_hash)
) STRICT, WITHOUT ROWID;
INSERT INTO used_nonces_new SELECT 'default', nonce_hash, expires_at FROM used_nonces;
DROP TABLE used_nonces;
ALTER TABLE used_nonces_new RENAME TO used_nonces;
CREATE INDEX used_nonces_by_expires_at ON used_nonces (tenant_id, expires_at);

CREATE TABLE agents_new (
    tenant_id     TEXT    NOT NULL,
    agent_id      TEXT    NOT NULL,               -- SPIFFE ID
    public_key    BLOB    NOT NULL,               -- raw 32-byte Ed25519 key
    orch_id       TEXT    NOT NULL,
    task_id       TEXT    NOT NULL,
    scope         TEXT    NOT NULL,               -- JSON array
    app_id        TEXT    NOT NULL,
    client_id     TEXT    NOT NULL,
    registered_at REAL    NOT NULL,
    status        TEXT    NOT NULL,
    cnf           TEXT    NOT NULL DEFAULT '',
    audience      TEXT    NOT NULL DEFAULT '[]',
    token_ttl     INTEGER NOT NULL DEFAULT 0,
    allow_resume  INTEGER NOT NULL DEFAULT 1 CHECK (allow_resume IN (0, 1)),
    PRIMARY KEY (tenant_id, agent_id)
) STRICT;
INSERT INTO agents_new SELECT 'default', agent_id, public_key, orch_id, task_id, scope,
    app_id, client_id, registered_at, status, cnf, audience, token_ttl, allow_resume
    FROM agents;
DROP TABLE agents;
ALTER TABLE agents_new RENAME TO agents;

-- seq stays AUTOINCREMENT and shared by all tenants: a value is never handed out twice,
-- so a tenant's pollers of revocations_since(last_seen) never see a number reused.
CREATE TABLE revocations_new (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT    NOT NULL,
    level      TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    revoked_at INTEGER NOT NULL,
    expires_at REAL    NOT NULL,
    UNIQUE (tenant_id, level, target)
) STRICT;
INSERT INTO revocations_new SELECT seq, 'default', level, target, revoked_at, expires_at
    FROM revocations;
DELETE FROM sqlite_sequence WHERE name = 'revocations_new';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'revocations_new', seq FROM sqlite_sequence WHERE name = 'revocations';
DROP TABLE revocations;
ALTER TABLE revocations_new RENAME TO revocations;
CREATE INDEX revocations_by_expires_at ON revocations (tenant_id, expires_at);
CREATE INDEX revocations_by_seq ON revocations (tenant_id, seq);

-- Each tenant's chain has its own seq from 1. The filter indexes end in the key
-- (tenant_id, seq), so a filtered query returns rows already in seq order.
CREATE TABLE audit_events_new (
    tenant_id        TEXT    NOT NULL,
    seq              INTEGER NOT NULL,
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
    hash             TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) STRICT, WITHOUT ROWID;
INSERT INTO audit_events_new SELECT 'default', seq, timestamp, ts, event_type, agent_id,
    task_id, orch_id, detail, resource, outcome, deleg_depth, deleg_chain_hash, request_id,
    prev_hash, hash FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_new RENAME TO audit_events;
CREATE INDEX audit_events_by_event_type ON audit_events (tenant_id, event_type);
CREATE INDEX audit_events_by_agent_id   ON audit_events (tenant_id, agent_id);
CREATE INDEX audit_events_by_task_id    ON audit_events (tenant_id, task_id);
CREATE INDEX audit_events_by_outcome    ON audit_events (tenant_id, outcome);
CREATE INDEX audit_events_by_ts         ON audit_events (tenant_id, ts);

CREATE TABLE reference_tokens_new (
    tenant_id  TEXT NOT NULL,
    token_hash TEXT NOT NULL,               -- sha256 hex, never the token
    kind       TEXT NOT NULL,               -- the JWT typ it stands for (at+jwt)
    claims     TEXT NOT NULL,               -- compact JSON claims
    jti        TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, token_hash)
) STRICT, WITHOUT ROWID;
INSERT INTO reference_tokens_new SELECT 'default', token_hash, kind, claims, jti, expires_at
    FROM reference_tokens;
DROP TABLE reference_tokens;
ALTER TABLE reference_tokens_new RENAME TO reference_tokens;
CREATE INDEX reference_tokens_by_expires_at ON reference_tokens (tenant_id, expires_at);

CREATE TABLE agent_sessions_new (
    tenant_id          TEXT    NOT NULL,
    agent_id           TEXT    NOT NULL,   -- SPIFFE ID
    principal          TEXT    NOT NULL,
    heartbeat_required INTEGER NOT NULL CHECK (heartbeat_required IN (0, 1)),
    last_heartbeat     REAL    NOT NULL,
    resumes            INTEGER NOT NULL,
    state              TEXT    NOT NULL,
    expires_at         REAL    NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
) STRICT, WITHOUT ROWID;
INSERT INTO agent_sessions_new SELECT 'default', agent_id, principal, heartbeat_required,
    last_heartbeat, resumes, state, expires_at FROM agent_sessions;
DROP TABLE agent_sessions;
ALTER TABLE agent_sessions_new RENAME TO agent_sessions;
CREATE INDEX agent_sessions_by_heartbeat ON agent_sessions (tenant_id, last_heartbeat)
    WHERE heartbeat_required = 1 AND state = 'active';
CREATE INDEX agent_sessions_by_expires_at ON agent_sessions (tenant_id, expires_at);

CREATE TABLE discovery_bindings_new (
    tenant_id  TEXT    NOT NULL,
    agent_id   TEXT    NOT NULL,               -- SPIFFE ID
    endpoint   TEXT    NOT NULL,
    issued_at  INTEGER NOT NULL,
    signature  BLOB    NOT NULL,               -- 64-byte Ed25519 signature
    expires_at REAL    NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
) STRICT, WITHOUT ROWID;
INSERT INTO discovery_bindings_new SELECT 'default', agent_id, endpoint, issued_at,
    signature, expires_at FROM discovery_bindings;
DROP TABLE discovery_bindings;
ALTER TABLE discovery_bindings_new RENAME TO discovery_bindings;
CREATE INDEX discovery_bindings_by_expires_at ON discovery_bindings (tenant_id, expires_at);

CREATE TABLE leases_new (
    tenant_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT, WITHOUT ROWID;
INSERT INTO leases_new SELECT 'default', name, holder, expires_at FROM leases;
DROP TABLE leases;
ALTER TABLE leases_new RENAME TO leases;
CREATE INDEX leases_by_expires_at ON leases (tenant_id, expires_at);

CREATE TABLE operators_new (
    tenant_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,     -- argon2id, never the secret; '' for a key
    public_key  BLOB NOT NULL,     -- raw Ed25519 key; empty for a secret
    status      TEXT NOT NULL,     -- 'active' or 'removed'
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;
INSERT INTO operators_new SELECT 'default', name, role, secret_hash, public_key, status,
    created_at, updated_at, created_by FROM operators;
DROP TABLE operators;
ALTER TABLE operators_new RENAME TO operators;
