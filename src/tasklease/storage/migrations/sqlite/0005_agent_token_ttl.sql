-- tasklease SQLite schema, version 5: the longest lifetime one of an agent's tokens may
-- have (its launch token's max_ttl), so a resumed agent is held to it as at registration.
-- 0 for agents registered before: the broker's default TTL applies to them.
ALTER TABLE agents ADD COLUMN token_ttl INTEGER NOT NULL DEFAULT 0;
