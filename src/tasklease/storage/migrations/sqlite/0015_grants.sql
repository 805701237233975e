-- tasklease SQLite schema, version 15: structured grants (RFC 9396 authorization_details;
-- docs/grants.md). apps, launch_tokens and agents keep their grants beside their scopes
-- as a JSON array ('' for none). grant_types: operators' types, each a JSON Schema and a
-- narrowing rule (JSON objects, checked). call_budgets: the calls a grant with max_calls
-- has left, under the budget of the grant it was narrowed from ('' for none); pruned at
-- expiry.
ALTER TABLE apps ADD COLUMN authorization_details TEXT NOT NULL DEFAULT '';
ALTER TABLE launch_tokens ADD COLUMN authorization_details TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN authorization_details TEXT NOT NULL DEFAULT '';

CREATE TABLE grant_types (
    tenant_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    json_schema TEXT NOT NULL,             -- JSON Schema (2020-12) of the type's grants
    narrowing   TEXT NOT NULL,             -- JSON object: member -> operator
    description TEXT NOT NULL,
    created_at  REAL NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

CREATE TABLE call_budgets (
    tenant_id  TEXT NOT NULL,
    budget_key TEXT NOT NULL,              -- <grant thread>:<grant digest>
    parent_key TEXT NOT NULL,              -- '' for none
    max_calls  INTEGER NOT NULL,
    calls      INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, budget_key)
) STRICT, WITHOUT ROWID;
CREATE INDEX call_budgets_by_expires_at ON call_budgets (tenant_id, expires_at);
