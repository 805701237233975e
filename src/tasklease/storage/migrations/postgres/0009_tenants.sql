-- Tenants: every row belongs to one tenant (tenant_id), and every key and index starts
-- with it. The rows that existed before belong to the default tenant ('default'). The
-- column takes that value once, for the rows already there, and then has no default:
-- a statement that forgot its tenant fails instead of writing into the default tenant.

CREATE TABLE tenants (
    name         text             NOT NULL PRIMARY KEY,   -- the id in URLs and rows
    trust_domain text             NOT NULL UNIQUE,        -- its SPIFFE trust domain
    status       text             NOT NULL,               -- 'active' or 'removed'
    created_at   double precision NOT NULL,
    created_by   text             NOT NULL,
    removed_at   double precision                         -- NULL while active
);

ALTER TABLE apps ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE apps ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE apps DROP CONSTRAINT apps_pkey, DROP CONSTRAINT apps_name_key,
    DROP CONSTRAINT apps_client_id_key;
ALTER TABLE apps ADD CONSTRAINT apps_pkey PRIMARY KEY (tenant_id, app_id),
    ADD CONSTRAINT apps_name_key UNIQUE (tenant_id, name),
    ADD CONSTRAINT apps_client_id_key UNIQUE (tenant_id, client_id);
DROP INDEX apps_by_created_at;
CREATE INDEX apps_by_created_at ON apps (tenant_id, created_at, app_id);

ALTER TABLE launch_tokens ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE launch_tokens ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE launch_tokens DROP CONSTRAINT launch_tokens_pkey;
ALTER TABLE launch_tokens ADD PRIMARY KEY (tenant_id, token_hash);
DROP INDEX launch_tokens_by_expires_at;
CREATE INDEX launch_tokens_by_expires_at ON launch_tokens (tenant_id, expires_at);

ALTER TABLE used_nonces ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE used_nonces ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE used_nonces DROP CONSTRAINT used_nonces_pkey;
ALTER TABLE used_nonces ADD PRIMARY KEY (tenant_id, nonce_hash);
DROP INDEX used_nonces_by_expires_at;
CREATE INDEX used_nonces_by_expires_at ON used_nonces (tenant_id, expires_at);

ALTER TABLE agents ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE agents ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE agents DROP CONSTRAINT agents_pkey;
ALTER TABLE agents ADD PRIMARY KEY (tenant_id, agent_id);

-- seq stays one sequence for all tenants: a value is never handed out twice.
ALTER TABLE revocations ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE revocations ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE revocations DROP CONSTRAINT revocations_level_target_key;
ALTER TABLE revocations ADD CONSTRAINT revocations_level_target_key
    UNIQUE (tenant_id, level, target);
DROP INDEX revocations_by_expires_at;
CREATE INDEX revocations_by_expires_at ON revocations (tenant_id, expires_at);
CREATE INDEX revocations_by_seq ON revocations (tenant_id, seq);

-- Each tenant's chain has its own seq from 1 and its own head row.
ALTER TABLE audit_events ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE audit_events ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_pkey;
ALTER TABLE audit_events ADD PRIMARY KEY (tenant_id, seq);
DROP INDEX audit_events_by_event_type;
DROP INDEX audit_events_by_agent_id;
DROP INDEX audit_events_by_task_id;
DROP INDEX audit_events_by_outcome;
DROP INDEX audit_events_by_ts;
CREATE INDEX audit_events_by_event_type ON audit_events (tenant_id, event_type, seq);
CREATE INDEX audit_events_by_agent_id   ON audit_events (tenant_id, agent_id, seq);
CREATE INDEX audit_events_by_task_id    ON audit_events (tenant_id, task_id, seq);
CREATE INDEX audit_events_by_outcome    ON audit_events (tenant_id, outcome, seq);
CREATE INDEX audit_events_by_ts         ON audit_events (tenant_id, ts);

ALTER TABLE audit_head ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE audit_head ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE audit_head DROP CONSTRAINT audit_head_pkey;
ALTER TABLE audit_head DROP COLUMN id;
ALTER TABLE audit_head ADD PRIMARY KEY (tenant_id);

ALTER TABLE reference_tokens ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE reference_tokens ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE reference_tokens DROP CONSTRAINT reference_tokens_pkey;
ALTER TABLE reference_tokens ADD PRIMARY KEY (tenant_id, token_hash);
DROP INDEX reference_tokens_by_expires_at;
CREATE INDEX reference_tokens_by_expires_at ON reference_tokens (tenant_id, expires_at);

ALTER TABLE agent_sessions ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE agent_sessions ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE agent_sessions DROP CONSTRAINT agent_sessions_pkey;
ALTER TABLE agent_sessions ADD PRIMARY KEY (tenant_id, agent_id);
DROP INDEX agent_sessions_by_heartbeat;
DROP INDEX agent_sessions_by_expires_at;
CREATE INDEX agent_sessions_by_heartbeat ON agent_sessions (tenant_id, last_heartbeat, agent_id)
    WHERE heartbeat_required AND state = 'active';
CREATE INDEX agent_sessions_by_expires_at ON agent_sessions (tenant_id, expires_at);

ALTER TABLE discovery_bindings ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE discovery_bindings ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE discovery_bindings DROP CONSTRAINT discovery_bindings_pkey;
ALTER TABLE discovery_bindings ADD PRIMARY KEY (tenant_id, agent_id);
DROP INDEX discovery_bindings_by_expires_at;
CREATE INDEX discovery_bindings_by_expires_at ON discovery_bindings (tenant_id, expires_at);

ALTER TABLE leases ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE leases ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE leases DROP CONSTRAINT leases_pkey;
ALTER TABLE leases ADD PRIMARY KEY (tenant_id, name);
CREATE INDEX leases_by_expires_at ON leases (tenant_id, expires_at);

ALTER TABLE operators ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE operators ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE operators DROP CONSTRAINT operators_pkey;
ALTER TABLE operators ADD PRIMARY KEY (tenant_id, name);
