-- Audio uploads (the original's Phase 2 fields, plus what storage needs), the
-- resumable upload sessions, and the Idempotency-Key records of POST /recordings.
ALTER TABLE recordings
    ADD COLUMN local_storage_key  uuid,
    ADD COLUMN draft_transcript   text,
    ADD COLUMN final_transcript   text,
    ADD COLUMN upload_attempts    bigint NOT NULL DEFAULT 0 CHECK (upload_attempts >= 0),
    ADD COLUMN audio_sha256       text CHECK (audio_sha256 IS NULL OR audio_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN audio_content_type text;

CREATE UNIQUE INDEX ux_recordings_clinician_local_storage_key
    ON recordings (clinician_id, local_storage_key) WHERE local_storage_key IS NOT NULL;

-- The two operational tables keep ids and timestamps as the same fixed-width
-- text as SQLite (RFC 3339 UTC, sorts chronologically), so that one SQL text
-- serves both backends (src/uploads/sessions.rs, src/idempotency.rs).
CREATE TABLE upload_sessions (
    clinician_id      text        NOT NULL,
    local_storage_key text        NOT NULL CHECK (length(local_storage_key) = 36),
    patient_id        text        NOT NULL,
    duration_seconds  bigint      NOT NULL CHECK (duration_seconds >= 0),
    draft_transcript  text,
    total_bytes       bigint      NOT NULL CHECK (total_bytes > 0),
    received_bytes    bigint      NOT NULL DEFAULT 0 CHECK (received_bytes >= 0 AND received_bytes <= total_bytes),
    created_at        text        NOT NULL,
    updated_at        text        NOT NULL,
    PRIMARY KEY (clinician_id, local_storage_key)
);
CREATE INDEX ix_upload_sessions_updated_at ON upload_sessions (updated_at);

CREATE TABLE idempotency_keys (
    clinician_id   text        NOT NULL,
    key            text        NOT NULL,
    request_sha256 text        NOT NULL,
    status_code    integer,
    response_body  text,
    created_at     text        NOT NULL,
    PRIMARY KEY (clinician_id, key)
);
CREATE INDEX ix_idempotency_keys_created_at ON idempotency_keys (created_at);
