-- What each Idempotency-Key of POST /api/v1/tasks was first sent with: a hash of the
-- canonical body, so the same key sent again with a different body is refused (422)
-- instead of silently answered with the first task.
CREATE TABLE IF NOT EXISTS task_request_bodies (
    idempotency_key text PRIMARY KEY CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    body_sha256     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
