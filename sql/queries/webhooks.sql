-- lock_app_for_webhooks --
-- Lock the app's row to the end of the transaction: its endpoints are added or changed one at a time, so
-- the cap and the one-per-URL rule hold without a race between the check and the insert. (The count is a
-- statement of its own, count_app_webhook_endpoints: one taken after the lock sees what the previous
-- holder committed, under READ COMMITTED.) Nothing when the app is revoked: `mailer apps revoke` locks the
-- row first, so a request that waited on it sees it revoked here and adds or re-enables no endpoint.
SELECT id FROM apps WHERE id = %(app_id)s AND revoked_at IS NULL FOR NO KEY UPDATE;

-- count_app_webhook_endpoints --
-- The app's endpoints: how many, and the ids and URLs of those other than `except_id` (at most
-- MAILER_WEBHOOK_MAX_ENDPOINTS and an older installation's extra ones; the caller compares URLs normalized).
SELECT count(*) AS endpoints,
       coalesce(array_agg(id ORDER BY created_at, id) FILTER (WHERE id IS DISTINCT FROM %(except_id)s::uuid),
                '{}') AS other_ids,
       coalesce(array_agg(url ORDER BY created_at, id) FILTER (WHERE id IS DISTINCT FROM %(except_id)s::uuid),
                '{}') AS other_urls
FROM webhook_endpoints
WHERE app_id = %(app_id)s;

-- insert_webhook_endpoint --
-- Register a subscriber URL for an app.
INSERT INTO webhook_endpoints (app_id, url, events, secret)
VALUES (%(app_id)s, %(url)s, %(events)s, %(secret)s)
RETURNING id, app_id, url, events, disabled_at, disabled_reason, previous_secret_expires_at, created_at, updated_at;

-- list_webhook_endpoints --
-- An app's endpoints, oldest first.
SELECT id, app_id, url, events, disabled_at, disabled_reason, previous_secret_expires_at, created_at, updated_at
FROM webhook_endpoints
WHERE app_id = %(app_id)s
ORDER BY created_at, id;

-- get_webhook_endpoint --
-- One endpoint of one app.
SELECT id, app_id, url, events, disabled_at, disabled_reason, previous_secret_expires_at, created_at, updated_at
FROM webhook_endpoints
WHERE id = %(id)s AND app_id = %(app_id)s;

-- update_webhook_endpoint --
-- Change an endpoint's url, events or enabled state (null leaves a field as it is). Enabling clears
-- the disabled state and the failure streak; disabling keeps an earlier disabled_at and reason.
UPDATE webhook_endpoints
SET url = coalesce(%(url)s, url),
    events = coalesce(%(events)s::text[], events),
    disabled_at = CASE WHEN %(enabled)s::boolean IS NULL THEN disabled_at
                       WHEN %(enabled)s::boolean THEN NULL
                       ELSE coalesce(disabled_at, now()) END,
    disabled_reason = CASE WHEN %(enabled)s::boolean IS NULL THEN disabled_reason
                           WHEN %(enabled)s::boolean THEN NULL
                           WHEN disabled_at IS NULL THEN 'disabled through the API'
                           ELSE disabled_reason END,
    failing_since = CASE WHEN %(enabled)s::boolean THEN NULL ELSE failing_since END,
    updated_at = now()
WHERE id = %(id)s AND app_id = %(app_id)s
RETURNING id, app_id, url, events, disabled_at, disabled_reason, previous_secret_expires_at, created_at, updated_at;

-- delete_webhook_endpoint --
-- Remove an endpoint with its deliveries (ON DELETE CASCADE) and their attempts (no foreign key since 0029: the
-- tables are partitioned); the messages stay in the outbox.
WITH endpoint AS (
    SELECT id FROM webhook_endpoints WHERE id = %(id)s AND app_id = %(app_id)s
), attempts AS (
    DELETE FROM webhook_attempts AS a
    USING webhook_deliveries AS d, endpoint
    WHERE d.endpoint_id = endpoint.id AND a.delivery_id = d.id AND a.message_created_at = d.message_created_at
)
DELETE FROM webhook_endpoints AS e
USING endpoint
WHERE e.id = endpoint.id
RETURNING e.id;

-- rotate_webhook_secret --
-- A new signing secret; the current one keeps signing beside it until `overlap_s` from now.
UPDATE webhook_endpoints
SET previous_secret = secret,
    previous_secret_expires_at = now() + make_interval(secs => %(overlap_s)s),
    secret = %(secret)s,
    updated_at = now()
WHERE id = %(id)s AND app_id = %(app_id)s
RETURNING id, app_id, url, events, disabled_at, disabled_reason, previous_secret_expires_at, created_at, updated_at;

-- claim_webhook_deliveries --
-- Take up to `limit` due deliveries, at most `per_endpoint` in flight per endpoint and `per_app` per app
-- (counting those other workers hold), so one slow or dead subscriber, or one app's, cannot take every worker. The claim commits
-- before the post: the delivery is leased (not due) until `lease_s` from now, which a dead worker
-- lets expire. Returns what a post needs: the body exactly as stored, the live secrets (encrypted); and,
-- for the log line, the job and the request id of the API call that queued it. The query is the function
-- webhook_claim_deliveries (migration 0024), which runs with JIT off.
SELECT id, attempts, message_id, type, body, endpoint_id, app_id, url, secret, previous_secret, job_id, request_id,
       message_created_at
FROM webhook_claim_deliveries(%(limit)s, %(per_endpoint)s, %(per_app)s, %(lease_s)s);

-- expand_webhook_fan_outs --
-- Write the deliveries of waiting status changes, oldest first, at most `max_rows` (migration 0020).
SELECT webhook_expand_fan_outs(%(max_rows)s) AS written;

-- postpone_webhook_delivery --
-- A claimed delivery whose host is over its rate: due again in `delay_s`, not attempted, no attempt logged.
-- By its whole key, as in record_webhook_attempt: one month's index is read, not every month's.
UPDATE webhook_deliveries
SET next_attempt_at = now() + make_interval(secs => %(delay_s)s), in_flight_until = NULL, updated_at = now()
WHERE id = %(delivery_id)s AND message_created_at = %(message_created_at)s AND status = 'pending'
RETURNING id;

-- record_webhook_attempt --
-- Log one attempt and move its delivery on: succeeded, failed, disabled, or pending again in
-- `retry_in_s` (by the database's clock). A delivery disabled while it was in flight stays disabled.
WITH attempt AS (
    INSERT INTO webhook_attempts (delivery_id, message_created_at, attempted_at, status_code, latency_ms, error)
    SELECT id, message_created_at, %(attempted_at)s, %(status_code)s, %(latency_ms)s, %(error)s
    FROM webhook_deliveries
    WHERE id = %(delivery_id)s AND message_created_at = %(message_created_at)s
)
UPDATE webhook_deliveries
SET status = CASE WHEN status = 'disabled' AND %(status)s = 'pending' THEN 'disabled' ELSE %(status)s END,
    attempts = attempts + 1,
    next_attempt_at = now() + make_interval(secs => coalesce(%(retry_in_s)s::double precision, 0)),
    in_flight_until = NULL,
    last_attempt_at = %(attempted_at)s,
    updated_at = now()
WHERE id = %(delivery_id)s AND message_created_at = %(message_created_at)s
RETURNING id, status;

-- update_webhook_endpoint_health --
-- After an attempt: a success ends the failure streak; a failure starts one (or continues it), and
-- disables the endpoint once it has lasted `disable_after_s`; `gone` (HTTP 410) disables at once.
UPDATE webhook_endpoints
SET failing_since = CASE WHEN %(succeeded)s THEN NULL ELSE coalesce(failing_since, now()) END,
    last_success_at = CASE WHEN %(succeeded)s THEN now() ELSE last_success_at END,
    disabled_at = CASE
        WHEN disabled_at IS NOT NULL THEN disabled_at
        WHEN %(gone)s THEN now()
        WHEN NOT %(succeeded)s
             AND failing_since <= now() - make_interval(secs => %(disable_after_s)s) THEN now()
        END,
    disabled_reason = CASE
        WHEN disabled_at IS NOT NULL THEN disabled_reason
        WHEN %(gone)s THEN 'the endpoint answered 410 Gone'
        WHEN NOT %(succeeded)s AND failing_since <= now() - make_interval(secs => %(disable_after_s)s)
            THEN 'no successful delivery since ' || webhook_rfc3339(failing_since)
        END
WHERE id = %(endpoint_id)s
  -- a success changes nothing worth a write while the endpoint is healthy (at most one a minute)
  AND (NOT %(succeeded)s OR failing_since IS NOT NULL OR last_success_at IS NULL
       OR last_success_at < now() - interval '1 minute')
RETURNING id, disabled_at IS NOT NULL AS disabled;

-- lock_app_of_webhook_endpoint --
-- Before the pending deliveries of an endpoint disabled after its failures are stopped: wait for an
-- expansion holding the app's row (migration 0024), so that none it writes meanwhile stays pending.
SELECT a.id FROM apps a JOIN webhook_endpoints e ON e.app_id = a.id WHERE e.id = %(endpoint_id)s
FOR NO KEY UPDATE OF a;

-- disable_webhook_deliveries --
-- An endpoint was disabled: its pending deliveries stop (a replay can send one again).
UPDATE webhook_deliveries
SET status = 'disabled', updated_at = now()
WHERE endpoint_id = %(endpoint_id)s AND status = 'pending'
RETURNING id;

-- list_webhook_deliveries --
-- An endpoint's deliveries, newest first, after a keyset cursor (the last id seen).
SELECT d.id, d.message_id, m.type, d.status, d.attempts, d.next_attempt_at,
       coalesce(d.in_flight_until > now(), false) AS in_flight, d.last_attempt_at, d.created_at, d.replay_id
FROM webhook_deliveries d
JOIN webhook_messages m ON m.id = d.message_id AND m.created_at = d.message_created_at
WHERE d.endpoint_id = %(endpoint_id)s
  AND (%(before_id)s::bigint IS NULL OR d.id < %(before_id)s::bigint)
  AND (%(status)s::text IS NULL OR d.status = %(status)s::text)
ORDER BY d.id DESC
LIMIT %(limit)s;

-- list_webhook_attempts --
-- Every attempt of these deliveries, oldest first.
SELECT id, delivery_id, attempted_at, status_code, latency_ms, error
FROM webhook_attempts
WHERE delivery_id = ANY(%(delivery_ids)s)
ORDER BY delivery_id, id;

-- get_webhook_delivery --
-- One delivery of one endpoint, locked for a replay.
SELECT d.id, d.status, d.in_flight_until > now() AS in_flight
FROM webhook_deliveries d
WHERE d.id = %(id)s AND d.endpoint_id = %(endpoint_id)s
FOR UPDATE;

-- replay_webhook_delivery --
-- Send a delivery again now, with a fresh retry schedule (its attempts so far stay in the log).
UPDATE webhook_deliveries
SET status = 'pending', attempts = 0, next_attempt_at = now(), in_flight_until = NULL, updated_at = now()
WHERE id = %(id)s AND endpoint_id = %(endpoint_id)s
RETURNING id, status, next_attempt_at;

-- list_webhook_secrets --
-- Endpoints' stored secrets (encrypted or, before `mailer db migrate` encrypted them, in the clear), by id.
SELECT id, secret, previous_secret
FROM webhook_endpoints
WHERE %(after_id)s::uuid IS NULL OR id > %(after_id)s::uuid
ORDER BY id
LIMIT %(limit)s;

-- replace_webhook_secrets --
-- Store an endpoint's secrets encrypted anew, unless they changed meanwhile (a rotation wins).
UPDATE webhook_endpoints
SET secret = %(secret)s, previous_secret = %(previous_secret)s
WHERE id = %(id)s AND secret = %(old_secret)s AND previous_secret IS NOT DISTINCT FROM %(old_previous_secret)s
RETURNING id;

