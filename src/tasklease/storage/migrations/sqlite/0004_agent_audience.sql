-- tasklease SQLite schema, version 4: the audience an agent registered for.
-- A resumed agent gets a token for the same resource (RFC 8707) as its registration.
-- JSON array; '[]' means the broker's default audience.
ALTER TABLE agents ADD COLUMN audience TEXT NOT NULL DEFAULT '[]';
