-- Transcription: the original's later columns (as migrations/sqlite/, with
-- native types), what the engine returns beside the text, and the durable job queue.
ALTER TABLE recordings ADD COLUMN whisper_model text NOT NULL DEFAULT 'base';
ALTER TABLE recordings ADD COLUMN transcription_started_at timestamptz;
ALTER TABLE recordings ADD COLUMN transcription_completed_at timestamptz;
ALTER TABLE recordings ADD COLUMN fhir_bundle jsonb;
ALTER TABLE recordings ADD COLUMN llm_model text;
ALTER TABLE recordings ADD COLUMN extraction_started_at timestamptz;
ALTER TABLE recordings ADD COLUMN extraction_completed_at timestamptz;
ALTER TABLE recordings ADD COLUMN verification_score double precision;
ALTER TABLE recordings ADD COLUMN verified_at timestamptz;
ALTER TABLE recordings ADD COLUMN transcript_language text;
ALTER TABLE recordings ADD COLUMN transcript_segments jsonb
    CHECK (transcript_segments IS NULL OR jsonb_typeof(transcript_segments) = 'array');

CREATE TABLE jobs (
    recording_id     uuid        NOT NULL REFERENCES recordings (id),
    kind             text        NOT NULL CHECK (kind IN ('transcribe')),
    state            text        NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts         bigint      NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    run_after        timestamptz NOT NULL,
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (recording_id, kind)
);
CREATE INDEX ix_jobs_queued ON jobs (run_after) WHERE state = 'queued';
CREATE INDEX ix_jobs_running ON jobs (lease_expires_at) WHERE state = 'running';

INSERT INTO jobs (recording_id, kind, state, attempts, run_after, created_at, updated_at)
SELECT id, 'transcribe', 'queued', 0, updated_at, updated_at, updated_at
FROM recordings WHERE status IN ('queued', 'processing');
