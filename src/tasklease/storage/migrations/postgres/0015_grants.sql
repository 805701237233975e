-- tasklease PostgreSQL schema, version 15: the same change as sqlite/0015_grants.sql.
ALTER TABLE apps ADD COLUMN authorization_details text NOT NULL DEFAULT '';
ALTER TABLE launch_tokens ADD COLUMN authorization_details text NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN authorization_details text NOT NULL DEFAULT '';

CREATE TABLE grant_types (
    tenant_id   text             NOT NULL,
    name        text             NOT NULL,
    json_schema text             NOT NULL,   -- JSON Schema (2020-12) of the type's grants
    narrowing   text             NOT NULL,   -- JSON object: member -> operator
    description text             NOT NULL,
    created_at  double precision NOT NULL,
    created_by  text             NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE call_budgets (
    tenant_id  text             NOT NULL,
    budget_key text             NOT NULL,   -- <grant thread>:<grant digest>
    parent_key text             NOT NULL,   -- '' for none
    max_calls  bigint           NOT NULL,
    calls      bigint           NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (tenant_id, budget_key)
);
CREATE INDEX call_budgets_by_expires_at ON call_budgets (tenant_id, expires_at);
