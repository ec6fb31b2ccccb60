-- The audit trail: one row per change to patient data, written in the
-- transaction of the change, chained by hashes (hash = SHA-256 of the
-- previous event's hash and this event's canonical content; see
-- src/audit/model.rs), and never changed or deleted: the triggers below
-- refuse it, and `clinscribe audit verify` finds a row edited with them
-- dropped.
CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY CHECK (seq >= 1),
    at           TEXT    NOT NULL CHECK (at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    actor        TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    recording_id TEXT,
    patient_id   TEXT,
    changes      TEXT    NOT NULL CHECK (json_valid(changes) AND json_type(changes) = 'object'),
    request_id   TEXT,
    client_addr  TEXT,
    prev_hash    TEXT    NOT NULL CHECK (length(prev_hash) = 64),
    hash         TEXT    NOT NULL CHECK (length(hash) = 64)
) STRICT;
-- A recording's history.
CREATE INDEX ix_audit_events_recording ON audit_events (recording_id, seq) WHERE recording_id IS NOT NULL;
-- Exports by time.
CREATE INDEX ix_audit_events_at ON audit_events (at);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
