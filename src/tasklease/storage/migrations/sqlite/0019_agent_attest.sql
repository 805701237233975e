-- tasklease schema, version 19: agents.attest, the `attest` claim of the agent's
-- registration as compact JSON ('' for none: agents registered before it was kept, and
-- agents that declared and proved nothing). A resumption's token carries it on, as every
-- other token of the agent's lineage does.
ALTER TABLE agents ADD COLUMN attest TEXT NOT NULL DEFAULT '';
