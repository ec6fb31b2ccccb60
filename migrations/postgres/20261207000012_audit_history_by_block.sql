-- Nothing to do here: this version re-indexes a recording's history on SQLite
-- (see migrations/sqlite/20261207000012_audit_history_by_block.sql), where
-- spooled reads enter the chain in batches. PostgreSQL commits each read's
-- event on its own and keeps ix_audit_events_recording. The file keeps the
-- two backends' migration versions the same.
SELECT 1;
