-- An endpoint's replays, newest first (the dashboard's Webhooks page, list_webhook_replays, on every load for each
-- endpoint). 0040 indexed webhook_replays by app only, and finished replays stay for MAILER_RETENTION_DAYS: an app
-- with many replays on one endpoint made each load read them all to find another endpoint's latest few (a seq scan
-- of 300,000 rows took 33 ms per endpoint). This index reads the endpoint's newest ones and stops at the limit.
CREATE INDEX webhook_replays_endpoint_idx ON webhook_replays (endpoint_id, id DESC);
-- Retention deletes replays finished more than MAILER_RETENTION_DAYS ago, oldest first, a batch at a time
-- (delete_finished_webhook_replays): by this index, not a scan of the table every run.
CREATE INDEX webhook_replays_finished_idx ON webhook_replays (finished_at) WHERE finished_at IS NOT NULL;
