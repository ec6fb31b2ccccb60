-- The recordings table on PostgreSQL: the same 15 fields, constraints and
-- indexes as migrations/sqlite/, with native types (uuid, timestamptz with
-- microsecond precision, jsonb).
CREATE TABLE recordings (
    id                   uuid        NOT NULL PRIMARY KEY,
    patient_id           text        NOT NULL,
    clinician_id         text        NOT NULL,
    audio_file_path      text,
    audio_file_size      bigint      CHECK (audio_file_size IS NULL OR audio_file_size >= 0),
    duration_seconds     bigint      CHECK (duration_seconds IS NULL OR duration_seconds >= 0),
    status               text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'uploading', 'queued', 'processing', 'completed', 'error')),
    error_message        text,
    retry_count          bigint      NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    uploaded_at          timestamptz,
    processed_at         timestamptz,
    transcript           text,
    verification_results jsonb
);

-- The original's single-column indexes.
CREATE INDEX ix_recordings_patient_id   ON recordings (patient_id);
CREATE INDEX ix_recordings_clinician_id ON recordings (clinician_id);
CREATE INDEX ix_recordings_status       ON recordings (status);
CREATE INDEX ix_recordings_created_at   ON recordings (created_at);

-- The list query: one clinician's recordings, optionally one status, newest
-- first, keyset-paginated on (created_at, id).
CREATE INDEX ix_recordings_clinician_created
    ON recordings (clinician_id, created_at DESC, id DESC);
CREATE INDEX ix_recordings_clinician_status_created
    ON recordings (clinician_id, status, created_at DESC, id DESC);
