-- tasklease PostgreSQL schema, version 7: the same changes as
-- sqlite/0007_launch_token_uses.sql (counted launch-token uses, resume switched per
-- launch token and recorded with the agent).
ALTER TABLE launch_tokens ADD COLUMN max_uses integer NOT NULL DEFAULT 1;
ALTER TABLE launch_tokens ADD COLUMN uses integer NOT NULL DEFAULT 0;
ALTER TABLE launch_tokens ADD COLUMN allow_resume boolean NOT NULL DEFAULT true;
UPDATE launch_tokens SET max_uses = 10 WHERE NOT single_use;
UPDATE launch_tokens SET uses = 1 WHERE single_use AND consumed_at IS NOT NULL;
ALTER TABLE agents ADD COLUMN allow_resume boolean NOT NULL DEFAULT true;
