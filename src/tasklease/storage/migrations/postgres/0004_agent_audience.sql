-- tasklease PostgreSQL schema, version 4: the audience an agent registered for.
-- The same change as sqlite/0004_agent_audience.sql; '{}' means the broker's default.
ALTER TABLE agents ADD COLUMN audience text[] NOT NULL DEFAULT '{}';
