-- tasklease PostgreSQL schema, version 23: the same change as
-- sqlite/0023_app_credential_changed.sql.
ALTER TABLE apps ADD COLUMN credential_changed_at double precision NOT NULL DEFAULT 0;
UPDATE apps SET credential_changed_at = updated_at;
