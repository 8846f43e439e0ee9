-- Replay by window (POST /webhooks/{id}/replay): a replay is a row naming the endpoint, the window and the
-- statuses; the worker expands it into deliveries of the stored webhook messages a chunk per transaction,
-- keyset by (created_at, id) with its progress in the row, so a crash resumes where the last chunk committed
-- and a chunk run twice writes nothing twice (the (message, endpoint) key of webhook_deliveries).
CREATE TABLE webhook_replays (
    id                 bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT webhook_replays_pkey PRIMARY KEY,
    endpoint_id        uuid NOT NULL
                       CONSTRAINT webhook_replays_endpoint_id_fkey REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    app_id             bigint NOT NULL CONSTRAINT webhook_replays_app_id_fkey REFERENCES apps (id),
    since              timestamptz NOT NULL,
    until              timestamptz NOT NULL,
    statuses           text[] NOT NULL,
    matched            bigint NOT NULL,
    queued             bigint NOT NULL DEFAULT 0,
    after_created_at   timestamptz,
    after_message_id   text,
    outcome            text CONSTRAINT webhook_replays_outcome_check CHECK (outcome IN ('done', 'cancelled')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    CONSTRAINT webhook_replays_window_check CHECK (since < until)
);
-- At most one running replay per endpoint; the API answers 409 for a second one.
CREATE UNIQUE INDEX webhook_replays_running_key ON webhook_replays (endpoint_id) WHERE finished_at IS NULL;
CREATE INDEX webhook_replays_app_idx ON webhook_replays (app_id);
-- The worker's look for running replays, every tick: finished ones are never read again.
CREATE INDEX webhook_replays_running_idx ON webhook_replays (id) WHERE finished_at IS NULL;

-- The replay a delivery was (last) queued by; NULL for a live one. No foreign key: the table is partitioned
-- and a replay row outlives nothing it would protect.
ALTER TABLE webhook_deliveries ADD COLUMN replay_id bigint;
-- The replay's own deliveries not yet attempted: the expansion keeps at most MAILER_WEBHOOK_REPLAY_IN_FLIGHT
-- of them, so live deliveries of the endpoint wait behind that many at most.
CREATE INDEX webhook_deliveries_replay_idx ON webhook_deliveries (replay_id)
    WHERE replay_id IS NOT NULL AND status = 'pending' AND attempts = 0;

-- An app's messages in time order: the count at the request and the keyset walk of the expansion read only
-- this index (type included for the status filter).
CREATE INDEX webhook_messages_app_created_idx ON webhook_messages (app_id, created_at, id) INCLUDE (type);
