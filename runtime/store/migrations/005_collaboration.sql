-- ask/tell: a message row follows its exchange. A request is `sent`, then `answered`,
-- `failed` (the target's handler raised) or `timed_out`; a notification is `sent`, then
-- `delivered` (the target has it) or `timed_out`; a response is `sent` once, as received.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'sent'
    CHECK (status IN ('sent', 'answered', 'delivered', 'failed', 'timed_out'));
ALTER TABLE messages ADD COLUMN IF NOT EXISTS error text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS finished_at timestamptz;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS duration_ms double precision;
CREATE INDEX IF NOT EXISTS messages_sender_idx ON messages (sender, created_at);

-- A discovery of type `question` becomes a task (the Aggregator routes it): the task it
-- became, or why it could not become one. Unrouted questions are found by a partial index.
ALTER TABLE discoveries ADD COLUMN IF NOT EXISTS routed_task_id uuid;
ALTER TABLE discoveries ADD COLUMN IF NOT EXISTS route_error text;
CREATE INDEX IF NOT EXISTS discoveries_unrouted_idx ON discoveries (created_at)
    WHERE type = 'question' AND routed_task_id IS NULL AND route_error IS NULL;

-- Templates name the model (from the model catalog) their agents use, and the resources
-- each agent of the template takes (`num_cpus`).
ALTER TABLE agent_templates ADD COLUMN IF NOT EXISTS model text;
ALTER TABLE agent_templates ADD COLUMN IF NOT EXISTS resources jsonb NOT NULL DEFAULT '{}';
-- Who made the template: a pool of rayvisor.yaml (kept in step with it at each start) or
-- the API (`POST /api/v1/templates`: a pool start never changes it).
ALTER TABLE agent_templates ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'pool'
    CHECK (source IN ('pool', 'api'));
