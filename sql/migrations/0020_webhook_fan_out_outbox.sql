-- Outbound webhooks that one app cannot turn against the others (issue 17):
-- 1. The fan-out leaves the status-changing transaction. The trigger writes one message per recipient
--    change (as before) plus one small row in webhook_fan_outs; the worker expands that row into one
--    delivery per enabled endpoint afterwards, in bounded batches (webhook_expand_fan_outs). 150
--    endpoints used to mean 7,500 delivery rows inside the transaction of one 50-recipient status change.
-- 2. Revoked apps get no fan-out and no claims.
-- 3. One enabled endpoint per URL per app (a unique index); the service also checks disabled ones and the
--    per-app cap under a lock on the app's row. Existing duplicates are not deleted: every later enabled
--    duplicate is disabled with a reason naming the endpoint kept (the oldest). Apps above the cap keep
--    their endpoints; they only cannot add one until they are under it.
-- 4. Secrets are stored encrypted (Fernet tokens), so the `whsec_` check goes; `mailer db migrate`
--    encrypts the secrets stored in the clear after this file (mailer/services/webhook_secrets.py).
-- 5. The worker's claim and expansion run as functions with `SET jit = off`: with thousands of endpoints
--    their estimated cost passes jit_above_cost and each call paid ~225 ms of JIT compilation for a plan
--    that runs in a millisecond. (A function-level SET, not a session one: DATABASE_URL may be PgBouncer.)

ALTER TABLE webhook_endpoints DROP CONSTRAINT webhook_endpoints_secret_check;
ALTER TABLE webhook_endpoints ADD CONSTRAINT webhook_endpoints_secret_check CHECK (secret <> '');

WITH ranked AS (
    SELECT id, first_value(id) OVER (PARTITION BY app_id, url ORDER BY created_at, id) AS kept
    FROM webhook_endpoints
    WHERE disabled_at IS NULL
)
UPDATE webhook_endpoints e
SET disabled_at = now(),
    disabled_reason = 'another endpoint of this app has the same URL (' || r.kept || '); one endpoint per URL',
    updated_at = now()
FROM ranked r
WHERE e.id = r.id AND r.id <> r.kept;
UPDATE webhook_deliveries d SET status = 'disabled', updated_at = now()
FROM webhook_endpoints e
WHERE e.id = d.endpoint_id AND e.disabled_at IS NOT NULL AND d.status = 'pending';

CREATE UNIQUE INDEX webhook_endpoints_app_url_key ON webhook_endpoints (app_id, url) WHERE disabled_at IS NULL;

-- Changes waiting for their deliveries: one row per message, expanded oldest first. `after_endpoint` is
-- the expansion's progress through the app's endpoints (by id) when one message needs several batches.
CREATE TABLE webhook_fan_outs (
    id              bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT webhook_fan_outs_pkey PRIMARY KEY,
    message_id      text NOT NULL
                    CONSTRAINT webhook_fan_outs_message_id_fkey REFERENCES webhook_messages (id) ON DELETE CASCADE,
    after_endpoint  uuid
);
CREATE INDEX webhook_fan_outs_message_idx ON webhook_fan_outs (message_id);

-- As in 0005, with two changes: revoked apps are skipped, and the transaction writes one fan-out row per
-- message instead of one delivery per message and endpoint.
CREATE OR REPLACE FUNCTION webhook_enqueue(changed_ids bigint[]) RETURNS void LANGUAGE sql AS $$
    WITH changed AS (
        SELECT r.id AS recipient_id, r.job_id, r.email, r.message_id, r.status, j.app_id, j.metadata,
               clock_timestamp() AS at
        FROM recipients r
        JOIN jobs j ON j.id = r.job_id
        JOIN apps a ON a.id = j.app_id AND a.revoked_at IS NULL
        WHERE r.id = ANY(changed_ids)
          AND r.status <> 'pending'  -- a retry resetting a recipient is no news to subscribers
          AND EXISTS (
              SELECT 1 FROM webhook_endpoints e
              WHERE e.app_id = j.app_id AND e.disabled_at IS NULL AND e.events && ARRAY['*', r.status]
          )
    ), messages AS (
        INSERT INTO webhook_messages (app_id, recipient_id, type, body, created_at)
        SELECT c.app_id, c.recipient_id, 'email.' || c.status,
               jsonb_build_object(
                   'type', 'email.' || c.status,
                   'timestamp', webhook_rfc3339(c.at),
                   'data', jsonb_build_object(
                       'job_id', c.job_id::text,
                       'recipient', c.email,
                       'message_id', c.message_id::text,
                       'status', c.status,
                       'metadata', c.metadata,
                       'event', coalesce(
                           (SELECT jsonb_build_object('type', me.status, 'at', webhook_rfc3339(me.occurred_at),
                                                      'mailjet_event', me.name)
                                   || jsonb_strip_nulls(jsonb_build_object(
                                       'url', webhook_json_safe(me.payload -> 'url'),
                                       'ip', webhook_json_safe(me.payload -> 'ip'),
                                       'geo', webhook_json_safe(me.payload -> 'geo'),
                                       'agent', webhook_json_safe(me.payload -> 'agent'),
                                       'error', webhook_json_safe(me.payload -> 'error'),
                                       'error_related_to', webhook_json_safe(me.payload -> 'error_related_to'),
                                       'hard_bounce', webhook_json_safe(me.payload -> 'hard_bounce'),
                                       'smtp_reply', webhook_json_safe(me.payload -> 'smtp_reply'),
                                       'source', webhook_json_safe(me.payload -> 'source'),
                                       'comment', webhook_json_safe(me.payload -> 'comment')))
                            FROM mailjet_events me
                            WHERE me.recipient_id = c.recipient_id AND me.status = c.status
                            ORDER BY me.occurred_at DESC, me.id DESC
                            LIMIT 1),
                           jsonb_build_object('type', c.status, 'at', webhook_rfc3339(c.at))
                       )
                   )
               ),
               c.at
        FROM changed c
        RETURNING id
    )
    INSERT INTO webhook_fan_outs (message_id)
    SELECT id FROM messages;
$$;

-- Turn waiting fan-outs into deliveries, oldest first, at most `max_rows` deliveries in all; how many
-- were written. One expander at a time (a transaction-level advisory lock: PgBouncer-safe), so the
-- fan-outs are expanded in order; another caller meanwhile gets 0 at once. Each delivery is due from its
-- message's time, so an endpoint's claims follow the order of the changes whenever they were expanded.
CREATE FUNCTION webhook_expand_fan_outs(max_rows integer) RETURNS integer
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    budget integer := max_rows;
    fan record;
    written integer;
    last_endpoint uuid;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('mailer.webhook_expand_fan_outs')) THEN
        RETURN 0;
    END IF;
    FOR fan IN
        SELECT f.id, f.after_endpoint, m.id AS message_id, m.app_id, substr(m.type, 7) AS status, m.created_at,
               a.revoked_at IS NOT NULL AS revoked
        FROM webhook_fan_outs f
        JOIN webhook_messages m ON m.id = f.message_id
        JOIN apps a ON a.id = m.app_id
        ORDER BY f.id
        LIMIT max_rows
    LOOP
        EXIT WHEN budget <= 0;
        IF fan.revoked THEN
            DELETE FROM webhook_fan_outs WHERE id = fan.id;
            CONTINUE;
        END IF;
        WITH targets AS (
            SELECT e.id
            FROM webhook_endpoints e
            WHERE e.app_id = fan.app_id AND e.disabled_at IS NULL AND e.events && ARRAY['*', fan.status]
              AND (fan.after_endpoint IS NULL OR e.id > fan.after_endpoint)
            ORDER BY e.id
            LIMIT budget
        ), inserted AS (
            INSERT INTO webhook_deliveries (message_id, endpoint_id, next_attempt_at)
            SELECT fan.message_id, t.id, fan.created_at FROM targets t
            ON CONFLICT ON CONSTRAINT webhook_deliveries_message_endpoint_key DO NOTHING
        )
        SELECT count(*), max(t.id::text)::uuid INTO written, last_endpoint FROM targets t;
        budget := budget - written;
        IF written = 0 OR budget > 0 THEN
            DELETE FROM webhook_fan_outs WHERE id = fan.id;  -- every endpoint has its delivery
        ELSE
            UPDATE webhook_fan_outs SET after_endpoint = last_endpoint WHERE id = fan.id;
        END IF;
    END LOOP;
    RETURN max_rows - budget;
END;
$$;

-- Is anything due at all? The idle claim's one probe (below).
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- The worker's claim (sql/queries/webhooks.sql, claim_webhook_deliveries) as a function, for its
-- `SET jit = off`; endpoints of revoked apps are not claimed. When nothing is due anywhere (the worker
-- asks every second) it stops at one index probe instead of two per enabled endpoint.
CREATE FUNCTION webhook_claim_deliveries(claim_limit integer, per_endpoint integer, lease_s double precision)
RETURNS TABLE (id bigint, attempts integer, message_id text, type text, body text, endpoint_id uuid, url text,
               secret text, previous_secret text, job_id text, request_id text)
LANGUAGE sql SET jit = off AS $$
    WITH endpoints AS (
        SELECT e.id,
               per_endpoint - (SELECT count(*) FROM webhook_deliveries f
                               WHERE f.endpoint_id = e.id AND f.in_flight_until > now()) AS free
        FROM webhook_endpoints e
        JOIN apps a ON a.id = e.app_id AND a.revoked_at IS NULL
        WHERE e.disabled_at IS NULL
          AND EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.status = 'pending' AND x.next_attempt_at <= now())
    ), due AS (
        SELECT d.id
        FROM endpoints e
        CROSS JOIN LATERAL (
            SELECT d.id, d.next_attempt_at
            FROM webhook_deliveries d
            WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= now()
            ORDER BY d.next_attempt_at, d.id
            LIMIT greatest(e.free, 0)
            FOR UPDATE SKIP LOCKED
        ) AS d
        ORDER BY d.next_attempt_at, d.id
        LIMIT claim_limit
    )
    UPDATE webhook_deliveries AS d
    SET in_flight_until = now() + make_interval(secs => lease_s),
        next_attempt_at = now() + make_interval(secs => lease_s),
        updated_at = now()
    FROM due, webhook_endpoints AS e, webhook_messages AS m
    WHERE d.id = due.id AND e.id = d.endpoint_id AND m.id = d.message_id
    RETURNING d.id, d.attempts, d.message_id, m.type, m.body::text, e.id, e.url, e.secret,
              CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END,
              m.body #>> '{data,job_id}',
              (SELECT j.request_id FROM recipients r JOIN jobs j ON j.id = r.job_id
               WHERE r.id = m.recipient_id);
$$;
