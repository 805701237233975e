-- tasklease PostgreSQL schema, version 17: the same change as
-- sqlite/0017_audit_partial_indexes.sql (only the audit events that are not a success, and
-- only those with a principal, in these two indexes).
DROP INDEX audit_events_by_outcome;
CREATE INDEX audit_events_by_outcome ON audit_events (tenant_id, outcome, seq)
    WHERE outcome <> 'success';
CREATE INDEX audit_events_by_outcome_type ON audit_events (tenant_id, outcome, event_type, seq)
    WHERE outcome <> 'success';
DROP INDEX audit_events_by_principal_ref;
CREATE INDEX audit_events_by_principal_ref ON audit_events (tenant_id, principal_ref, seq)
    WHERE principal_ref <> '';
