-- A task keeps the trace context of its submit (W3C `traceparent`/`tracestate` headers), so
-- every attempt, whichever TaskManager incarnation leases it, joins the task's one trace.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS trace_context jsonb;
