-- tasklease SQLite schema, version 16: offline reports (docs/audit.md, "Reported late").
-- offline_reports: the keys of the offline derivations and uses already audited, so that
-- a report sent again (a retry, a replay) is a no-op and not a second event. A key is
-- kept until the reported block can no longer be reported (its expiry plus the report
-- window), then pruned.
CREATE TABLE offline_reports (
    tenant_id  TEXT NOT NULL,
    report_key TEXT NOT NULL,              -- d:<block jti> | u:<leaf jti>:<verifier>:<minute>
    expires_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, report_key)
) STRICT, WITHOUT ROWID;
CREATE INDEX offline_reports_by_expires_at ON offline_reports (tenant_id, expires_at);
