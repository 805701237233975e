-- tasklease PostgreSQL schema, version 18: the same change as
-- sqlite/0018_audit_lookup_behind.sql (the agent and task lookups of the audit log in two
-- tables filled a few thousand events at a time, behind the log).
CREATE TABLE audit_agent_seqs (
    tenant_id text   NOT NULL,
    agent_id  text   NOT NULL,
    seq       bigint NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, seq)
);

CREATE TABLE audit_task_seqs (
    tenant_id text   NOT NULL,
    task_id   text   NOT NULL,
    seq       bigint NOT NULL,
    PRIMARY KEY (tenant_id, task_id, seq)
);

CREATE TABLE audit_indexed (
    tenant_id text   NOT NULL PRIMARY KEY,
    seq       bigint NOT NULL
);

INSERT INTO audit_agent_seqs (tenant_id, agent_id, seq)
    SELECT tenant_id, agent_id, seq FROM audit_events ORDER BY tenant_id, agent_id, seq;
INSERT INTO audit_task_seqs (tenant_id, task_id, seq)
    SELECT tenant_id, task_id, seq FROM audit_events ORDER BY tenant_id, task_id, seq;
INSERT INTO audit_indexed (tenant_id, seq)
    SELECT tenant_id, MAX(seq) FROM audit_events GROUP BY tenant_id;
DROP INDEX audit_events_by_agent_id;
DROP INDEX audit_events_by_task_id;
