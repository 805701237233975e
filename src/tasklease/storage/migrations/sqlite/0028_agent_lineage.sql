-- tasklease SQLite schema, version 28: agents.lineage, the lineage ids the agent's
-- registration descends from as its first token listed them (JSON array): its app, the
-- attestation it registered through and the federated domain whose evidence it
-- presented (`fed:<domain>`). The agent's standing, and what is delegated or exchanged to
-- it, end with each. '[]' for agents registered before it was kept: their app and
-- attestation alone, as before.
ALTER TABLE agents ADD COLUMN lineage TEXT NOT NULL DEFAULT '[]';
