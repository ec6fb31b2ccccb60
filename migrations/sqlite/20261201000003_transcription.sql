-- Transcription: the original's later columns (names and types as its last
-- migration has them; whisper_model NOT NULL DEFAULT 'base' as there), what
-- the engine returns beside the text, and the durable job queue.
ALTER TABLE recordings ADD COLUMN whisper_model TEXT NOT NULL DEFAULT 'base';
ALTER TABLE recordings ADD COLUMN transcription_started_at TEXT
    CHECK (transcription_started_at IS NULL OR transcription_started_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z');
ALTER TABLE recordings ADD COLUMN transcription_completed_at TEXT
    CHECK (transcription_completed_at IS NULL OR transcription_completed_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z');
ALTER TABLE recordings ADD COLUMN fhir_bundle TEXT CHECK (fhir_bundle IS NULL OR json_valid(fhir_bundle));
ALTER TABLE recordings ADD COLUMN llm_model TEXT;
ALTER TABLE recordings ADD COLUMN extraction_started_at TEXT
    CHECK (extraction_started_at IS NULL OR extraction_started_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z');
ALTER TABLE recordings ADD COLUMN extraction_completed_at TEXT
    CHECK (extraction_completed_at IS NULL OR extraction_completed_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z');
ALTER TABLE recordings ADD COLUMN verification_score REAL;
ALTER TABLE recordings ADD COLUMN verified_at TEXT
    CHECK (verified_at IS NULL OR verified_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z');
ALTER TABLE recordings ADD COLUMN transcript_language TEXT;
ALTER TABLE recordings ADD COLUMN transcript_segments TEXT
    CHECK (transcript_segments IS NULL OR (json_valid(transcript_segments) AND json_type(transcript_segments) = 'array'));

-- One row per piece of work on a recording (kind 'transcribe' today). A worker
-- takes a job by setting lease_owner and lease_expires_at, and extends the
-- lease while it works; a job whose lease expired is taken again.
CREATE TABLE jobs (
    recording_id     TEXT    NOT NULL REFERENCES recordings (id),
    kind             TEXT    NOT NULL CHECK (kind IN ('transcribe')),
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
-- What a worker looks for: queued jobs that are due, and running jobs whose lease expired.
CREATE INDEX ix_jobs_queued ON jobs (run_after) WHERE state = 'queued';
CREATE INDEX ix_jobs_running ON jobs (lease_expires_at) WHERE state = 'running';

-- Dictations stored before this version, waiting (or stuck mid-way in the
-- original's worker): each gets its job, so none stays queued forever.
INSERT INTO jobs (recording_id, kind, state, attempts, run_after, created_at, updated_at)
SELECT id, 'transcribe', 'queued', 0, updated_at, updated_at, updated_at
FROM recordings WHERE status IN ('queued', 'processing');
