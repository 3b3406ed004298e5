-- Fencing: a task's lease is the token every change of it carries, and a task manager owns
-- its shard by an epoch; a write of a stale lease or an older owner changes nothing.
ALTER TABLE tasks ADD COLUMN lease bigint NOT NULL DEFAULT 0 CHECK (lease >= 0);
-- How long one attempt may run (Temporal's start-to-close): past it, the attempt fails and
-- the task is retried while it has attempts left; `deadline` is the end of the whole task.
ALTER TABLE tasks ADD COLUMN attempt_timeout_s double precision CHECK (attempt_timeout_s > 0);

CREATE TABLE shard_owners (
    shard      integer PRIMARY KEY CHECK (shard >= 0),
    epoch      bigint NOT NULL CHECK (epoch > 0),
    owner      text NOT NULL,
    taken_at   timestamptz NOT NULL DEFAULT now()
);
