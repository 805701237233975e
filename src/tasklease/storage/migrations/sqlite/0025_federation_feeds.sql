-- tasklease SQLite schema, version 25: when each federated domain's revocation feed was
-- last heard current (core.peerfeed). The one process following the feeds writes it;
-- every process exchanging that domain's tokens reads it, and refuses them once the
-- feed has been silent longer than federation_feed_max_staleness.
CREATE TABLE federation_feeds (
    tenant_id    TEXT NOT NULL,
    trust_domain TEXT NOT NULL,
    heard_at     REAL NOT NULL,     -- Unix seconds
    PRIMARY KEY (tenant_id, trust_domain)
) STRICT;
