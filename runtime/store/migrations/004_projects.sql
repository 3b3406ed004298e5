-- Projects and fan-out: what the Aggregator needs to pick its work up again after a restart.
-- A project keeps its inputs, the plan its planning task returned (with the ids of the
-- tasks made from it and the agents spawned for it), and the reason it failed.
ALTER TABLE projects ADD COLUMN IF NOT EXISTS inputs jsonb NOT NULL DEFAULT '{}';
ALTER TABLE projects ADD COLUMN IF NOT EXISTS plan jsonb;
ALTER TABLE projects ADD COLUMN IF NOT EXISTS error text;
-- A task with `fan_out` is split into child tasks (`parent_id`) by the Aggregator.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS fan_out jsonb;
CREATE INDEX IF NOT EXISTS projects_active_idx ON projects (created_at)
    WHERE status IN ('pending', 'planning', 'running');
