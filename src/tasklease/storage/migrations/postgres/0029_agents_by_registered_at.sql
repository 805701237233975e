-- tasklease PostgreSQL schema, version 29: the same change as
-- sqlite/0029_agents_by_registered_at.sql (agents by registration time, every tenant's in
-- one index, for the count of live agents behind tasklease_active_agents).
CREATE INDEX agents_by_registered_at ON agents (registered_at);
