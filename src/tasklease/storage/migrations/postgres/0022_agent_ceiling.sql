-- tasklease PostgreSQL schema, version 22: the same change as sqlite/0022_agent_ceiling.sql.
ALTER TABLE agents ADD COLUMN ceiling bigint NOT NULL DEFAULT 0;
