-- tasklease PostgreSQL schema, version 19: the same change as sqlite/0019_agent_attest.sql.
ALTER TABLE agents ADD COLUMN attest text NOT NULL DEFAULT '';
