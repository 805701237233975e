-- tasklease PostgreSQL schema, version 26: the same change as
-- sqlite/0026_launch_token_agent_key.sql.
ALTER TABLE launch_tokens ADD COLUMN agent_key text NOT NULL DEFAULT '';
