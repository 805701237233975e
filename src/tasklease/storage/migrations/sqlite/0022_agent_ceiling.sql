-- tasklease schema, version 22: agents.ceiling, the latest `exp` any token of the agent's
-- registration may have (its lineage's `max_exp`: an attestation policy's `lifetime`
-- makes it earlier than `renewal_ceiling` after registration). The agent's standing as
-- the holder of delegated or exchanged tokens ends there too. 0 for agents registered
-- before it was kept: their registration time plus `renewal_ceiling`, as before.
ALTER TABLE agents ADD COLUMN ceiling INTEGER NOT NULL DEFAULT 0;
