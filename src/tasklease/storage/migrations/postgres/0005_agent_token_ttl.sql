-- tasklease PostgreSQL schema, version 5: the same change as sqlite/0005_agent_token_ttl.sql.
ALTER TABLE agents ADD COLUMN token_ttl integer NOT NULL DEFAULT 0;
