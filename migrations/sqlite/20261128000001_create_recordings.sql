-- The recordings table: the 15 fields of the original service, same names.
-- Ids are canonical lower-case hyphenated UUID text; timestamps are fixed-width
-- RFC 3339 UTC text ("2026-11-27T23:53:30.306917Z"), which sorts chronologically
-- and is exactly what the API returns (the CHECKs keep it so, whoever writes).
CREATE TABLE recordings (
    id                   TEXT    NOT NULL PRIMARY KEY
        CHECK (length(id) = 36 AND id = lower(id)),
    patient_id           TEXT    NOT NULL,
    clinician_id         TEXT    NOT NULL,
    audio_file_path      TEXT,
    audio_file_size      INTEGER CHECK (audio_file_size IS NULL OR audio_file_size >= 0),
    duration_seconds     INTEGER CHECK (duration_seconds IS NULL OR duration_seconds >= 0),
    status               TEXT    NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'uploading', 'queued', 'processing', 'completed', 'error')),
    error_message        TEXT,
    retry_count          INTEGER NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    created_at           TEXT    NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at           TEXT    NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    uploaded_at          TEXT    CHECK (uploaded_at IS NULL OR uploaded_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    processed_at         TEXT    CHECK (processed_at IS NULL OR processed_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    transcript           TEXT,
    verification_results TEXT    CHECK (verification_results IS NULL OR json_valid(verification_results))
) STRICT;

-- The original's single-column indexes.
CREATE INDEX ix_recordings_patient_id   ON recordings (patient_id);
CREATE INDEX ix_recordings_clinician_id ON recordings (clinician_id);
CREATE INDEX ix_recordings_status       ON recordings (status);
CREATE INDEX ix_recordings_created_at   ON recordings (created_at);

-- The list query: one clinician's recordings, optionally one status, newest
-- first, keyset-paginated on (created_at, id). With these the query reads
-- exactly one page of index entries, however deep the page.
CREATE INDEX ix_recordings_clinician_created
    ON recordings (clinician_id, created_at DESC, id DESC);
CREATE INDEX ix_recordings_clinician_status_created
    ON recordings (clinician_id, status, created_at DESC, id DESC);
