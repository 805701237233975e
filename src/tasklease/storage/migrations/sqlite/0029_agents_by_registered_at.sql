-- tasklease SQLite schema, version 29: agents by registration time, every tenant's in one
-- index. tasklease_active_agents counts the deployment's live agents every housekeeping
-- tick (Store.live_agents), and a live agent registered within renewal_ceiling: the count
-- reads those rows only, not every agent ever registered (a full scan of a million rows
-- took about 0.4 s on SQLite and 1.2 s on PostgreSQL at each tick).
CREATE INDEX agents_by_registered_at ON agents (registered_at);
