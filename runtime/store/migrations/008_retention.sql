-- Retention (runtime/store/retention.py) walks these tables oldest first, a batch at a time:
-- by time, since their keys are uuids (the bigserial-keyed ones it walks by key).
CREATE INDEX IF NOT EXISTS discoveries_created_idx ON discoveries (created_at);
CREATE INDEX IF NOT EXISTS messages_created_idx ON messages (created_at);
CREATE INDEX IF NOT EXISTS tool_executions_started_idx ON tool_executions (started_at);
