-- Clinical guardrails, second part (as migrations/sqlite/20261203000009).
ALTER TABLE recordings
    ADD COLUMN acknowledgements jsonb NOT NULL DEFAULT '[]'
        CHECK (jsonb_typeof(acknowledgements) = 'array');

CREATE OR REPLACE FUNCTION recordings_signed_note_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.signed_at IS NOT NULL AND (
        NEW.final_transcript IS DISTINCT FROM OLD.final_transcript
        OR NEW.patient_id IS DISTINCT FROM OLD.patient_id
        OR NEW.signed_at IS DISTINCT FROM OLD.signed_at
        OR NEW.signed_by IS DISTINCT FROM OLD.signed_by
        OR NEW.signed_sha256 IS DISTINCT FROM OLD.signed_sha256
        OR NEW.acknowledgements IS DISTINCT FROM OLD.acknowledgements
        OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at
        OR jsonb_array_length(NEW.amendments) < jsonb_array_length(OLD.amendments)) THEN
        RAISE EXCEPTION 'a signed note cannot change: add an amendment';
    END IF;
    RETURN NEW;
END
$$;

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('transcribe', 'verify'));
