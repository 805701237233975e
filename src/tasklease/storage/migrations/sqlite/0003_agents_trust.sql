-- tasklease SQLite schema, version 3: agents that trust each other.
--
-- * launch_tokens.principal: the human (or other principal, `kind:value`) a launch token
--   was created for; '' means its creator (`admin` or `app:<app_id>`).
-- * agent_sessions: per-agent task state beside the registration: the principal its
--   tokens carry, heartbeat supervision (opt-in or required by config), the count of
--   crash-recovery resumptions, and its state (active, released, silent_revoked).
-- * discovery_bindings: an agent's endpoint with its own Ed25519 signature over the
--   domain-separated statement (core/discovery.py), so a peer can verify it offline.
-- * leases: named, expiring leases; one liveness sweeper at a time across replicas.

ALTER TABLE launch_tokens ADD COLUMN principal TEXT NOT NULL DEFAULT '';

CREATE TABLE agent_sessions (
    agent_id           TEXT    NOT NULL PRIMARY KEY,   -- SPIFFE ID
    principal          TEXT    NOT NULL,
    heartbeat_required INTEGER NOT NULL CHECK (heartbeat_required IN (0, 1)),
    last_heartbeat     REAL    NOT NULL,
    resumes            INTEGER NOT NULL,
    state              TEXT    NOT NULL,
    expires_at         REAL    NOT NULL
) STRICT, WITHOUT ROWID;

-- The sweeper's query: required, active, heartbeat older than a bound.
CREATE INDEX agent_sessions_by_heartbeat ON agent_sessions (last_heartbeat)
    WHERE heartbeat_required = 1 AND state = 'active';
CREATE INDEX agent_sessions_by_expires_at ON agent_sessions (expires_at);

CREATE TABLE discovery_bindings (
    agent_id   TEXT    NOT NULL PRIMARY KEY,   -- SPIFFE ID
    endpoint   TEXT    NOT NULL,
    issued_at  INTEGER NOT NULL,
    signature  BLOB    NOT NULL,               -- 64-byte Ed25519 signature
    expires_at REAL    NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX discovery_bindings_by_expires_at ON discovery_bindings (expires_at);

CREATE TABLE leases (
    name       TEXT NOT NULL PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
) STRICT, WITHOUT ROWID;
