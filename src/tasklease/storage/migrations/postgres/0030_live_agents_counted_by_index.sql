-- tasklease PostgreSQL schema, version 30: the same change as
-- sqlite/0030_live_agents_counted_by_index.sql (the count of live agents behind
-- tasklease_active_agents reads indexes, not rows).
DROP INDEX agents_by_registered_at;
CREATE INDEX agents_live ON agents (registered_at, status, ceiling, tenant_id);
CREATE INDEX agents_by_app ON agents (tenant_id, app_id, registered_at);
CREATE INDEX agents_by_task ON agents (tenant_id, task_id, registered_at);
CREATE INDEX agent_sessions_ended ON agent_sessions (tenant_id, agent_id) WHERE state <> 'active';
