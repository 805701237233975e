-- tasklease SQLite schema, version 18: the agent and task lookups of the audit log are kept
-- behind it (docs/audit.md, "Finding events").
--
-- An index on audit_events (tenant_id, agent_id) took one entry per event in the event's own
-- group commit, at a place in the index set by the agent, not by time: a batch of forty
-- events of forty agents wrote forty index pages, and the task index as many again. These
-- lookups now live in two tables filled a few thousand events at a time, in the transaction
-- of a later append (SQLWriteTx._index_audit), where one page takes many entries; a query
-- reads them for the events up to audit_indexed.seq and the few events after it from the log
-- itself. Both are written in one transaction with the events they follow, so a crash
-- leaves them in step.
CREATE TABLE audit_agent_seqs (
    tenant_id TEXT    NOT NULL,
    agent_id  TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE audit_task_seqs (
    tenant_id TEXT    NOT NULL,
    task_id   TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, task_id, seq)
) STRICT, WITHOUT ROWID;

-- Each tenant's last event in the two tables above.
CREATE TABLE audit_indexed (
    tenant_id TEXT    NOT NULL PRIMARY KEY,
    seq       INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO audit_agent_seqs (tenant_id, agent_id, seq)
    SELECT tenant_id, agent_id, seq FROM audit_events ORDER BY tenant_id, agent_id, seq;
INSERT INTO audit_task_seqs (tenant_id, task_id, seq)
    SELECT tenant_id, task_id, seq FROM audit_events ORDER BY tenant_id, task_id, seq;
INSERT INTO audit_indexed (tenant_id, seq)
    SELECT tenant_id, MAX(seq) FROM audit_events GROUP BY tenant_id;
DROP INDEX audit_events_by_agent_id;
DROP INDEX audit_events_by_task_id;
