-- tasklease SQLite schema, version 30: the count of live agents (Store.live_agents, behind
-- tasklease_active_agents) reads indexes, not rows. The agents registered within
-- renewal_ceiling are counted from one index holding every column that test reads; the
-- agents among them that are not live are found from the few rows that end them (sessions
-- not active, apps not active, revocation entries in force), through the agents by app
-- and by task. A million live agents: 36 s before on SQLite.
DROP INDEX agents_by_registered_at;
CREATE INDEX agents_live ON agents (registered_at, status, ceiling, tenant_id);
CREATE INDEX agents_by_app ON agents (tenant_id, app_id, registered_at);
CREATE INDEX agents_by_task ON agents (tenant_id, task_id, registered_at);
CREATE INDEX agent_sessions_ended ON agent_sessions (tenant_id, agent_id) WHERE state <> 'active';
