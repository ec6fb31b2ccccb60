-- Clinical guardrails, second part.
--
-- `acknowledgements`: the critical alerts a clinician acknowledged, with a
-- reason, when signing (a JSON array, kept with the signature and as final).
ALTER TABLE recordings ADD COLUMN acknowledgements TEXT NOT NULL DEFAULT '[]'
    CHECK (json_valid(acknowledgements) AND json_type(acknowledgements) = 'array');

DROP TRIGGER recordings_signed_note_is_final;
CREATE TRIGGER recordings_signed_note_is_final BEFORE UPDATE ON recordings
WHEN OLD.signed_at IS NOT NULL AND (
    NEW.final_transcript IS NOT OLD.final_transcript
    OR NEW.patient_id IS NOT OLD.patient_id
    OR NEW.signed_at IS NOT OLD.signed_at
    OR NEW.signed_by IS NOT OLD.signed_by
    OR NEW.signed_sha256 IS NOT OLD.signed_sha256
    OR NEW.acknowledgements IS NOT OLD.acknowledgements
    OR NEW.deleted_at IS NOT OLD.deleted_at
    OR json_array_length(NEW.amendments) < json_array_length(OLD.amendments))
BEGIN
    SELECT RAISE(ABORT, 'a signed note cannot change: add an amendment');
END;

-- A job may now also be the check of a note's text by an extraction engine
-- that is a server elsewhere (`verify`). SQLite cannot change a CHECK in
-- place: the table is rebuilt (docs/MIGRATIONS.md); nothing references it.
CREATE TABLE jobs_new (
    recording_id     TEXT    NOT NULL REFERENCES recordings (id),
    kind             TEXT    NOT NULL CHECK (kind IN ('transcribe', 'verify')),
    state            TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    run_after        TEXT    NOT NULL CHECK (run_after GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    lease_owner      TEXT,
    lease_expires_at TEXT    CHECK (lease_expires_at IS NULL OR lease_expires_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    last_error       TEXT,
    created_at       TEXT    NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at       TEXT    NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    PRIMARY KEY (recording_id, kind)
) STRICT;
INSERT INTO jobs_new (recording_id, kind, state, attempts, run_after, lease_owner,
    lease_expires_at, last_error, created_at, updated_at)
SELECT recording_id, kind, state, attempts, run_after, lease_owner,
    lease_expires_at, last_error, created_at, updated_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX ix_jobs_queued ON jobs (run_after) WHERE state = 'queued';
CREATE INDEX ix_jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
