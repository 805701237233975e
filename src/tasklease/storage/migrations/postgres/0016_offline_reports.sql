-- tasklease PostgreSQL schema, version 16: the same change as sqlite/0016_offline_reports.sql.
CREATE TABLE offline_reports (
    tenant_id  text             NOT NULL,
    report_key text             NOT NULL,   -- d:<block jti> | u:<leaf jti>:<verifier>:<minute>
    expires_at double precision NOT NULL,
    PRIMARY KEY (tenant_id, report_key)
);
CREATE INDEX offline_reports_by_expires_at ON offline_reports (tenant_id, expires_at);
