-- tasklease PostgreSQL schema, version 28: the same change as sqlite/0028_agent_lineage.sql.
ALTER TABLE agents ADD COLUMN lineage text[] NOT NULL DEFAULT '{}';
