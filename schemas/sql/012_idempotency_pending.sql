-- Requests with an Idempotency-Key record their decided event *before* producing it
-- (services/command/pipeline.py). If the service dies between the broker's ack and the answer,
-- the retry finds the event here and re-publishes the very same event (same event id, same
-- post id) instead of deciding anew, so one logical command never becomes two events.
-- NULL once the broker acknowledged and the final answer (with its position) is stored.
ALTER TABLE cmd_idempotency ADD COLUMN pending_events bytea[];
CREATE INDEX cmd_idempotency_pending ON cmd_idempotency (created_at)
    WHERE pending_events IS NOT NULL;
