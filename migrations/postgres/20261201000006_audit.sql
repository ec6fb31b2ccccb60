-- The audit trail (as migrations/sqlite/). `at` is text in the canonical
-- form the hash covers, so that what is verified is exactly what was hashed.
CREATE TABLE audit_events (
    seq          bigint PRIMARY KEY CHECK (seq >= 1),
    at           text   NOT NULL CHECK (at ~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$'),
    actor        text   NOT NULL,
    action       text   NOT NULL,
    recording_id text,
    patient_id   text,
    changes      text   NOT NULL,
    request_id   text,
    client_addr  text,
    prev_hash    text   NOT NULL CHECK (length(prev_hash) = 64),
    hash         text   NOT NULL CHECK (length(hash) = 64)
);
CREATE INDEX ix_audit_events_recording ON audit_events (recording_id, seq) WHERE recording_id IS NOT NULL;
CREATE INDEX ix_audit_events_at ON audit_events (at);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END
$$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
