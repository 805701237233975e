-- tasklease SQLite schema, version 17: lighter audit indexes (docs/performance.md).
--
-- Every index entry is written in the group commit of its event. The outcome index held
-- one entry per event although nearly all are 'success', a value no one looks up by index
-- (the page is found in seq order, the count is the others subtracted from the total): it
-- now holds only the other outcomes, and a second one with the event type (the first keeps
-- seq order), so "denied token_renewed" is found without reading every renewal; both are
-- written for the few events that are not a success. The principal index skips events
-- with no principal.
-- Queries add the matching constant term (Dialect.audit_query) so the planner uses them.
DROP INDEX audit_events_by_outcome;
CREATE INDEX audit_events_by_outcome ON audit_events (tenant_id, outcome)
    WHERE outcome <> 'success';
CREATE INDEX audit_events_by_outcome_type ON audit_events (tenant_id, outcome, event_type)
    WHERE outcome <> 'success';
DROP INDEX audit_events_by_principal_ref;
CREATE INDEX audit_events_by_principal_ref ON audit_events (tenant_id, principal_ref)
    WHERE principal_ref <> '';
