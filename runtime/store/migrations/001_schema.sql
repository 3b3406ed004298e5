-- The whole record of rayvisor. Status columns are checked here as well as in the models,
-- so a bad write from any client is refused by the database itself.

CREATE TABLE projects (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'planning', 'running', 'completed', 'failed', 'cancelled')),
    requirements jsonb NOT NULL DEFAULT '[]',
    result       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX projects_status_idx ON projects (status, created_at);

CREATE TABLE agent_templates (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    class_path   text NOT NULL,
    capabilities text[] NOT NULL DEFAULT '{}',
    parameters   jsonb NOT NULL DEFAULT '{}',
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    id             text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,120}$'),
    template_id    uuid REFERENCES agent_templates (id) ON DELETE SET NULL,
    name           text NOT NULL,
    capabilities   text[] NOT NULL DEFAULT '{}',
    state          text NOT NULL DEFAULT 'created'
                   CHECK (state IN ('created', 'starting', 'running', 'busy', 'idle',
                                    'stopping', 'stopped', 'error', 'failed')),
    state_detail   jsonb NOT NULL DEFAULT '{}',
    saved_state    jsonb,
    supervisor_id  text,
    restart_count  integer NOT NULL DEFAULT 0 CHECK (restart_count >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    last_active_at timestamptz
);
CREATE INDEX agents_state_idx ON agents (state);
CREATE INDEX agents_capabilities_idx ON agents USING gin (capabilities);

CREATE TABLE agent_specializations (
    agent_id    text NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    capability  text NOT NULL CHECK (length(capability) BETWEEN 1 AND 100),
    proficiency real NOT NULL DEFAULT 1.0 CHECK (proficiency BETWEEN 0 AND 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, capability)
);

CREATE TABLE agent_events (
    id         bigserial PRIMARY KEY,
    agent_id   text NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    from_state text CHECK (from_state IN ('created', 'starting', 'running', 'busy', 'idle',
                                          'stopping', 'stopped', 'error', 'failed')),
    to_state   text NOT NULL
               CHECK (to_state IN ('created', 'starting', 'running', 'busy', 'idle',
                                   'stopping', 'stopped', 'error', 'failed')),
    reason     text NOT NULL DEFAULT '',
    detail     jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_events_agent_idx ON agent_events (agent_id, id);

CREATE TABLE tasks (
    id                    uuid PRIMARY KEY,
    project_id            uuid REFERENCES projects (id) ON DELETE CASCADE,
    parent_id             uuid REFERENCES tasks (id) ON DELETE CASCADE,
    title                 text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    description           text NOT NULL DEFAULT '',
    required_capabilities text[] NOT NULL DEFAULT '{}',
    parameters            jsonb NOT NULL DEFAULT '{}',
    priority              smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    dependencies          uuid[] NOT NULL DEFAULT '{}',
    deadline              timestamptz,
    max_attempts          integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    idempotency_key       text UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    status                text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'queued', 'assigned', 'running', 'completed',
                                            'failed', 'cancelled', 'timed_out')),
    attempt               integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    assigned_to           text,
    result                jsonb,
    error                 jsonb,
    attempt_errors        jsonb NOT NULL DEFAULT '[]',
    not_before            timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    CHECK (attempt <= max_attempts)
);
-- The queue: highest priority first, then oldest.
CREATE INDEX tasks_queue_idx ON tasks (priority DESC, created_at) WHERE status = 'queued';
-- Leases held by an agent, re-queued at once when it dies.
CREATE INDEX tasks_leases_idx ON tasks (assigned_to) WHERE status IN ('assigned', 'running');
CREATE INDEX tasks_pending_idx ON tasks (created_at) WHERE status = 'pending';
CREATE INDEX tasks_dependencies_idx ON tasks USING gin (dependencies);
CREATE INDEX tasks_status_idx ON tasks (status, created_at, id);
CREATE INDEX tasks_project_idx ON tasks (project_id);
CREATE INDEX tasks_parent_idx ON tasks (parent_id);

CREATE TABLE supervisor_events (
    id            bigserial PRIMARY KEY,
    supervisor_id text NOT NULL,
    child_id      text,
    event         text NOT NULL
                  CHECK (event IN ('child_started', 'child_exited', 'restart_scheduled', 'restarted',
                                   'circuit_opened', 'circuit_half_open', 'circuit_closed',
                                   'escalated', 'supervisor_stopped')),
    reason        text NOT NULL DEFAULT '',
    detail        jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX supervisor_events_supervisor_idx ON supervisor_events (supervisor_id, id);
CREATE INDEX supervisor_events_child_idx ON supervisor_events (child_id, id);

-- Children a simple_one_for_one supervisor started at run time: a restarted supervisor
-- starts them again (OTP forgets them; rayvisor does not).
CREATE TABLE supervisor_children (
    supervisor_id text NOT NULL,
    child_id      text NOT NULL,
    spec          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (supervisor_id, child_id)
);

CREATE TABLE tool_executions (
    id          uuid PRIMARY KEY,
    task_id     uuid REFERENCES tasks (id) ON DELETE SET NULL,
    agent_id    text,
    tool        text NOT NULL,
    input       jsonb NOT NULL DEFAULT '{}',
    output      jsonb,
    status      text NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'succeeded', 'failed', 'rejected')),
    error       text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    duration_ms double precision
);
CREATE INDEX tool_executions_task_idx ON tool_executions (task_id);
CREATE INDEX tool_executions_agent_idx ON tool_executions (agent_id, started_at);

CREATE TABLE discoveries (
    id         uuid PRIMARY KEY,
    agent_id   text NOT NULL,
    type       text NOT NULL CHECK (type ~ '^[a-z][a-z0-9_]{0,62}$'),
    content    text NOT NULL CHECK (length(content) BETWEEN 1 AND 10000),
    confidence real NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    data       jsonb NOT NULL DEFAULT '{}',
    task_id    uuid REFERENCES tasks (id) ON DELETE SET NULL,
    project_id uuid REFERENCES projects (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX discoveries_type_idx ON discoveries (type, created_at);
CREATE INDEX discoveries_agent_idx ON discoveries (agent_id, created_at);

-- Agent-to-agent messages (ctx.ask), kept for audit and replay.
CREATE TABLE messages (
    id             uuid PRIMARY KEY,
    correlation_id uuid,
    sender         text NOT NULL,
    recipient      text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('request', 'response', 'notification')),
    payload        jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_correlation_idx ON messages (correlation_id);
CREATE INDEX messages_recipient_idx ON messages (recipient, created_at);

-- Events written in the same transaction as the state change they describe; the relay
-- publishes them to JetStream in `seq` order with `id` as Nats-Msg-Id, then marks them sent.
CREATE TABLE outbox (
    seq        bigserial PRIMARY KEY,
    id         uuid NOT NULL UNIQUE,
    subject    text NOT NULL,
    payload    jsonb NOT NULL,
    headers    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent_idx ON outbox (seq) WHERE sent_at IS NULL;

CREATE TABLE api_keys (
    id                uuid PRIMARY KEY,
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix            text NOT NULL UNIQUE,
    key_hash          text NOT NULL,
    scopes            text[] NOT NULL CHECK (scopes <@ ARRAY['read', 'write', 'admin']::text[]
                                             AND cardinality(scopes) > 0),
    rate_per_s        real NOT NULL DEFAULT 50 CHECK (rate_per_s > 0),
    burst             integer NOT NULL DEFAULT 100 CHECK (burst > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_used_at      timestamptz,
    revoked_at        timestamptz
);
