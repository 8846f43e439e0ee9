-- count_replay_messages --
-- The app's webhook messages in [since, until) of these statuses: what a replay of the window delivers
-- (webhook_messages_app_created_idx, index only).
SELECT count(*) AS matched
FROM webhook_messages
WHERE app_id = %(app_id)s AND created_at >= %(since)s AND created_at < %(until)s
  AND substr(type, 7) = ANY(%(statuses)s::text[]);

-- insert_webhook_replay --
-- Record a replay to expand in the background (done at once when nothing matched, so that it blocks no
-- other); nothing when one of the endpoint's is still running.
INSERT INTO webhook_replays (endpoint_id, app_id, since, until, statuses, matched, outcome, finished_at)
VALUES (%(endpoint_id)s, %(app_id)s, %(since)s, %(until)s, %(statuses)s, %(matched)s,
        CASE WHEN %(matched)s = 0 THEN 'done' END, CASE WHEN %(matched)s = 0 THEN now() END)
ON CONFLICT (endpoint_id) WHERE finished_at IS NULL DO NOTHING
RETURNING id, endpoint_id, since, until, statuses, matched, queued, outcome, created_at, finished_at;

-- get_webhook_replay --
-- One replay of one endpoint.
SELECT id, endpoint_id, since, until, statuses, matched, queued, outcome, created_at, finished_at
FROM webhook_replays
WHERE id = %(id)s AND endpoint_id = %(endpoint_id)s;

-- claim_webhook_replay --
-- A running replay no other worker is expanding, locked to the end of the transaction (a row lock: fine on
-- a transaction-mode pooler), with its endpoint's state and how many of its deliveries wait unattempted.
SELECT r.id, r.endpoint_id, r.app_id, r.since, r.until, r.statuses, r.after_created_at, r.after_message_id,
       e.disabled_at IS NOT NULL OR a.revoked_at IS NOT NULL AS stopped,
       (SELECT count(*) FROM webhook_deliveries d
        WHERE d.replay_id = r.id AND d.status = 'pending' AND d.attempts = 0) AS waiting
FROM webhook_replays r
JOIN webhook_endpoints e ON e.id = r.endpoint_id
JOIN apps a ON a.id = r.app_id
WHERE r.finished_at IS NULL AND r.id > %(after_id)s
ORDER BY r.id
LIMIT 1
FOR UPDATE OF r SKIP LOCKED;

-- expand_webhook_replay_chunk --
-- The next `max_rows` messages of a replay after its keyset position, each delivered again to its endpoint
-- with the same webhook-id: a new delivery, or the existing one sent again as a single replay does (one
-- still pending is left as it is: it will be delivered anyway). The position moves in the same transaction,
-- and the replay is done when the window has no more.
WITH replay AS (
    SELECT id, endpoint_id, app_id, since, until, statuses, after_created_at, after_message_id
    FROM webhook_replays WHERE id = %(id)s AND finished_at IS NULL
), chunk AS (
    SELECT m.id, m.created_at
    FROM replay r
    CROSS JOIN LATERAL (
        SELECT m.id, m.created_at
        FROM webhook_messages m
        WHERE m.app_id = r.app_id AND m.created_at >= r.since AND m.created_at < r.until
          AND substr(m.type, 7) = ANY(r.statuses)
          AND (r.after_created_at IS NULL OR (m.created_at, m.id) > (r.after_created_at, r.after_message_id))
        ORDER BY m.created_at, m.id
        LIMIT %(max_rows)s
    ) AS m
), written AS (
    INSERT INTO webhook_deliveries AS d (message_id, message_created_at, endpoint_id, next_attempt_at, replay_id)
    SELECT c.id, c.created_at, r.endpoint_id, now(), r.id FROM chunk c, replay r
    ON CONFLICT ON CONSTRAINT webhook_deliveries_message_endpoint_key DO UPDATE
    SET status = 'pending', attempts = 0, next_attempt_at = now(), in_flight_until = NULL,
        replay_id = excluded.replay_id, updated_at = now()
    WHERE d.status <> 'pending'
    RETURNING d.id
), last AS (
    SELECT c.id, c.created_at FROM chunk c ORDER BY c.created_at DESC, c.id DESC LIMIT 1
)
UPDATE webhook_replays AS w
SET queued = w.queued + (SELECT count(*) FROM chunk),
    after_created_at = coalesce((SELECT created_at FROM last), w.after_created_at),
    after_message_id = coalesce((SELECT id FROM last), w.after_message_id),
    outcome = CASE WHEN (SELECT count(*) FROM chunk) < %(max_rows)s THEN 'done' END,
    finished_at = CASE WHEN (SELECT count(*) FROM chunk) < %(max_rows)s THEN now() END
FROM replay r
WHERE w.id = r.id
RETURNING w.id, (SELECT count(*) FROM chunk) AS expanded, (SELECT count(*) FROM written) AS written,
          w.finished_at IS NOT NULL AS finished;

-- cancel_webhook_replay --
-- Stop a replay whose endpoint was disabled or whose app was revoked.
UPDATE webhook_replays SET outcome = 'cancelled', finished_at = now()
WHERE id = %(id)s AND finished_at IS NULL
RETURNING id;

-- count_running_webhook_replays --
-- Replays not finished yet, for the metrics.
SELECT count(*) AS running FROM webhook_replays WHERE finished_at IS NULL;

-- list_webhook_replays --
-- An endpoint's latest replays, newest first, for the dashboard: webhook_replays_endpoint_idx (0043) read from the
-- newest, stopping at the limit; the app_id test keeps another app's endpoint out.
SELECT id, endpoint_id, since, until, statuses, matched, queued, outcome, created_at, finished_at
FROM webhook_replays
WHERE app_id = %(app_id)s AND endpoint_id = %(endpoint_id)s
ORDER BY id DESC
LIMIT %(limit)s;
