-- tasklease PostgreSQL schema, version 14: the same change as sqlite/0014_app_public_keys.sql.
ALTER TABLE apps ADD COLUMN public_key text NOT NULL DEFAULT '';
