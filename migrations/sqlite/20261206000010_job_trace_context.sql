-- Traces across the queue: the W3C `traceparent` of the request that queued a
-- job (NULL when traces are off), so that the worker's span for the job
-- continues that request's trace.
ALTER TABLE jobs ADD COLUMN trace_parent TEXT;
