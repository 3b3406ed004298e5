-- ask/tell: a message row follows its exchange. A request is `sent`, then `answered`,
-- `failed` (the target's handler raised) or `timed_out`; a notification is `sent`, then
-- `delivered` (the target has it) or `timed_out`; a response is `sent` once, as received.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'sent'
    CHECK (status IN ('sent', 'answered', 'delivered', 'failed', 'timed_out'));
ALTER TABLE messages ADD COLUMN IF NOT EXISTS error text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS finished_at timestamptz;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS duration_ms double precision;
CREATE INDEX IF NOT EXISTS messages_sender_idx ON messages (sender, created_at);
