-- Who runs the system on this database: one row, written by the `rayvisor up` that holds
-- the ownership advisory lock (runtime/ownership.py). The lock is the truth; this row only
-- describes its holder for the refusal message, and a stale one (its process gone) is
-- overwritten by the next owner.
CREATE TABLE IF NOT EXISTS system_owner (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    host          text NOT NULL,
    pid           integer NOT NULL,
    home          text NOT NULL,
    namespace     text NOT NULL,
    http_url      text NOT NULL,
    ray_address   text,
    dashboard_url text,
    started_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
