-- Audio uploads (the original's Phase 2 fields, plus what storage needs), the
-- resumable upload sessions, and the Idempotency-Key records of POST /recordings.
-- Existing rows keep working: every new column is nullable or has a default.
ALTER TABLE recordings ADD COLUMN local_storage_key TEXT
    CHECK (local_storage_key IS NULL OR (length(local_storage_key) = 36 AND local_storage_key = lower(local_storage_key)));
ALTER TABLE recordings ADD COLUMN draft_transcript TEXT;
ALTER TABLE recordings ADD COLUMN final_transcript TEXT;
ALTER TABLE recordings ADD COLUMN upload_attempts INTEGER NOT NULL DEFAULT 0 CHECK (upload_attempts >= 0);
ALTER TABLE recordings ADD COLUMN audio_sha256 TEXT
    CHECK (audio_sha256 IS NULL OR (length(audio_sha256) = 64 AND audio_sha256 NOT GLOB '*[^0-9a-f]*'));
ALTER TABLE recordings ADD COLUMN audio_content_type TEXT;

-- One recording per dictation: a retried upload finds the first one.
CREATE UNIQUE INDEX ux_recordings_clinician_local_storage_key
    ON recordings (clinician_id, local_storage_key) WHERE local_storage_key IS NOT NULL;

-- A chunked upload in progress; its bytes are in the audio store's partial area.
CREATE TABLE upload_sessions (
    clinician_id      TEXT    NOT NULL,
    local_storage_key TEXT    NOT NULL CHECK (length(local_storage_key) = 36),
    patient_id        TEXT    NOT NULL,
    duration_seconds  INTEGER NOT NULL CHECK (duration_seconds >= 0),
    draft_transcript  TEXT,
    total_bytes       INTEGER NOT NULL CHECK (total_bytes > 0),
    received_bytes    INTEGER NOT NULL DEFAULT 0 CHECK (received_bytes >= 0 AND received_bytes <= total_bytes),
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    PRIMARY KEY (clinician_id, local_storage_key)
) STRICT;
CREATE INDEX ix_upload_sessions_updated_at ON upload_sessions (updated_at);

-- Idempotency-Key: the first request's body hash and, once answered, its response.
CREATE TABLE idempotency_keys (
    clinician_id   TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    request_sha256 TEXT    NOT NULL,
    status_code    INTEGER,            -- NULL while the first request is in flight
    response_body  TEXT,
    created_at     TEXT    NOT NULL,
    PRIMARY KEY (clinician_id, key)
) STRICT;
CREATE INDEX ix_idempotency_keys_created_at ON idempotency_keys (created_at);
