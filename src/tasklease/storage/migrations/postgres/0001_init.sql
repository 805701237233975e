-- tasklease PostgreSQL schema, version 1.
--
-- Same tables and meanings as the SQLite schema (storage/migrations/sqlite/0001_init.sql).
-- Conventions: times are double precision Unix seconds (revocations.revoked_at is bigint
-- whole seconds, as in RevocationRecord); scope lists are text[]. The schema_version table
-- is created by the migration runner, not here: it must exist before the first migration
-- can be recorded.

CREATE TABLE apps (
    app_id      text             NOT NULL PRIMARY KEY,
    name        text             NOT NULL CONSTRAINT apps_name_key UNIQUE,
    client_id   text             NOT NULL CONSTRAINT apps_client_id_key UNIQUE,
    secret_hash text             NOT NULL,      -- argon2id, never the secret
    scopes      text[]           NOT NULL,
    token_ttl   integer          NOT NULL,
    status      text             NOT NULL,
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL,
    created_by  text             NOT NULL
);

-- list_apps is newest first.
CREATE INDEX apps_by_created_at ON apps (created_at, app_id);

CREATE TABLE launch_tokens (
    token_hash    text             NOT NULL PRIMARY KEY,   -- sha256 hex, never the token
    agent_name    text             NOT NULL,
    allowed_scope text[]           NOT NULL,
    max_ttl       integer          NOT NULL,
    single_use    boolean          NOT NULL,
    created_at    double precision NOT NULL,
    expires_at    double precision NOT NULL,
    created_by    text             NOT NULL,
    app_id        text             NOT NULL DEFAULT '',    -- '' when an admin created it
    consumed_at   double precision                         -- NULL until a single-use token is used
);

CREATE INDEX launch_tokens_by_expires_at ON launch_tokens (expires_at);

CREATE TABLE used_nonces (
    nonce_hash text             NOT NULL PRIMARY KEY,
    expires_at double precision NOT NULL
);

CREATE INDEX used_nonces_by_expires_at ON used_nonces (expires_at);

CREATE TABLE agents (
    agent_id      text             NOT NULL PRIMARY KEY,   -- SPIFFE ID
    public_key    bytea            NOT NULL,               -- raw 32-byte Ed25519 key
    orch_id       text             NOT NULL,
    task_id       text             NOT NULL,
    scope         text[]           NOT NULL,
    app_id        text             NOT NULL,
    client_id     text             NOT NULL,
    registered_at double precision NOT NULL,
    status        text             NOT NULL
);

-- A sequence never hands a value out twice, even after the row holding the highest seq
-- was pruned. Values are drawn while the transaction holds the audit head lock (see
-- audit_head below), so they become visible in increasing order across replicas: a
-- replica reading revocations_since(last_seen) never misses an entry that committed late
-- with a smaller number. An extended entry takes a fresh, larger seq.
CREATE SEQUENCE revocation_seq AS bigint;

CREATE TABLE revocations (
    seq        bigint           NOT NULL DEFAULT nextval('revocation_seq') PRIMARY KEY,
    level      text             NOT NULL,
    target     text             NOT NULL,
    revoked_at bigint           NOT NULL,
    expires_at double precision NOT NULL,
    CONSTRAINT revocations_level_target_key UNIQUE (level, target)
);

ALTER SEQUENCE revocation_seq OWNED BY revocations.seq;

CREATE INDEX revocations_by_expires_at ON revocations (expires_at);

-- seq is assigned by the core (head + 1, read under the head lock), so no sequence.
-- ts is the RFC 3339 timestamp parsed to Unix seconds for since/until range filters.
CREATE TABLE audit_events (
    seq              bigint           NOT NULL PRIMARY KEY,
    timestamp        text             NOT NULL,
    ts               double precision NOT NULL,
    event_type       text             NOT NULL,
    agent_id         text             NOT NULL,
    task_id          text             NOT NULL,
    orch_id          text             NOT NULL,
    detail           text             NOT NULL,
    resource         text             NOT NULL,
    outcome          text             NOT NULL,
    deleg_depth      integer          NOT NULL,
    deleg_chain_hash text             NOT NULL,
    request_id       text             NOT NULL,
    prev_hash        text             NOT NULL,
    hash             text             NOT NULL
);

-- Each filter index ends in seq so a filtered query returns rows in seq order unsorted.
CREATE INDEX audit_events_by_event_type ON audit_events (event_type, seq);
CREATE INDEX audit_events_by_agent_id   ON audit_events (agent_id, seq);
CREATE INDEX audit_events_by_task_id    ON audit_events (task_id, seq);
CREATE INDEX audit_events_by_outcome    ON audit_events (outcome, seq);
CREATE INDEX audit_events_by_ts         ON audit_events (ts);

-- The chain head, one row. Every transaction that appends audit events (or draws a
-- revocation seq) first locks it with SELECT ... FOR UPDATE, so replicas append one at a
-- time and the log stays one unbroken chain. The core locks it once per group-committed
-- batch, so the lock is taken per batch, not per event.
CREATE TABLE audit_head (
    id   boolean NOT NULL PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint  NOT NULL,
    hash text    NOT NULL
);

INSERT INTO audit_head (id, seq, hash) VALUES (true, 0, repeat('0', 64));
