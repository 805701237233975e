-- tasklease PostgreSQL schema, version 3: agents that trust each other.
-- The same changes as sqlite/0003_agents_trust.sql.
--
-- * launch_tokens.principal: the principal (`kind:value`) a launch token was created
--   for; '' means its creator.
-- * agent_sessions: per-agent task state (principal, heartbeat supervision, resumptions,
--   state: active, released, silent_revoked).
-- * discovery_bindings: an agent's endpoint with its own Ed25519 signature.
-- * leases: named, expiring leases; one liveness sweeper at a time across replicas.

ALTER TABLE launch_tokens ADD COLUMN principal text NOT NULL DEFAULT '';

CREATE TABLE agent_sessions (
    agent_id           text             NOT NULL PRIMARY KEY,   -- SPIFFE ID
    principal          text             NOT NULL,
    heartbeat_required boolean          NOT NULL,
    last_heartbeat     double precision NOT NULL,
    resumes            integer          NOT NULL,
    state              text             NOT NULL,
    expires_at         double precision NOT NULL
);

-- The sweeper's query: required, active, heartbeat older than a bound.
CREATE INDEX agent_sessions_by_heartbeat ON agent_sessions (last_heartbeat, agent_id)
    WHERE heartbeat_required AND state = 'active';
CREATE INDEX agent_sessions_by_expires_at ON agent_sessions (expires_at);

CREATE TABLE discovery_bindings (
    agent_id   text             NOT NULL PRIMARY KEY,   -- SPIFFE ID
    endpoint   text             NOT NULL,
    issued_at  bigint           NOT NULL,
    signature  bytea            NOT NULL,               -- 64-byte Ed25519 signature
    expires_at double precision NOT NULL
);

CREATE INDEX discovery_bindings_by_expires_at ON discovery_bindings (expires_at);

CREATE TABLE leases (
    name       text             NOT NULL PRIMARY KEY,
    holder     text             NOT NULL,
    expires_at double precision NOT NULL
);
