-- tasklease SQLite schema, version 7: launch tokens are counted, not static secrets.
--
-- * launch_tokens.max_uses, launch_tokens.uses: how many registrations a launch token
--   admits and how many it has made; a registration takes one use in one conditional
--   UPDATE (uses < max_uses), so no more than max_uses ever win. A single-use token
--   admits one. Multi-use tokens created before this version admitted any number: they
--   get 10, the default for a multi-use token that names none.
-- * launch_tokens.allow_resume, agents.allow_resume: whether the agents a launch token
--   launches may resume by key after a restart (POST /v1/resume); copied to the agent
--   at registration, so resume reads it from the agent. 1 (allowed) for existing rows.
ALTER TABLE launch_tokens ADD COLUMN max_uses INTEGER NOT NULL DEFAULT 1;
ALTER TABLE launch_tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE launch_tokens ADD COLUMN allow_resume INTEGER NOT NULL DEFAULT 1
    CHECK (allow_resume IN (0, 1));
UPDATE launch_tokens SET max_uses = 10 WHERE single_use = 0;
UPDATE launch_tokens SET uses = 1 WHERE single_use = 1 AND consumed_at IS NOT NULL;
ALTER TABLE agents ADD COLUMN allow_resume INTEGER NOT NULL DEFAULT 1
    CHECK (allow_resume IN (0, 1));
