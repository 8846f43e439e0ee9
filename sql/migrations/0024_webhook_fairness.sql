-- Issue 17 review of the outbound webhooks.
--
-- 1. The expander takes a share lock on each fan-out's app row before it reads the app's endpoints. Every
--    change that disables endpoints — PATCH /webhooks/{id} (lock_app_for_webhooks), `mailer apps revoke`,
--    and the automatic disabling after failures (lock_app_of_webhook_endpoint) — holds that row FOR NO KEY
--    UPDATE before it marks the endpoint's pending deliveries `disabled`. So either the expander reads the
--    endpoint disabled, or the disabling waits until the expander committed and then sees its deliveries:
--    none stays pending forever for a disabled endpoint. (It locks no endpoint row: a single lock per app
--    taken in the same order as everyone else's, so no deadlock.)
-- 2. The claim caps an app's posts in flight (across workers), besides each endpoint's, so that one app's
--    slow subscribers cannot hold every delivery slot; and it returns the app, which keys the per-host rate
--    limit by app and host. The three-argument claim of 0020 stays for workers of the previous release
--    during a rolling deploy.

CREATE OR REPLACE FUNCTION webhook_expand_fan_outs(max_rows integer) RETURNS integer
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    budget integer := max_rows;
    fan record;
    written integer;
    last_endpoint uuid;
    revoked boolean;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('mailer.webhook_expand_fan_outs')) THEN
        RETURN 0;
    END IF;
    FOR fan IN
        SELECT f.id, f.after_endpoint, m.id AS message_id, m.app_id, substr(m.type, 7) AS status, m.created_at
        FROM webhook_fan_outs f
        JOIN webhook_messages m ON m.id = f.message_id
        ORDER BY f.id
        LIMIT max_rows
    LOOP
        EXIT WHEN budget <= 0;
        -- Under the app's lock (see above); the endpoints are read by the next statement, after it.
        SELECT a.revoked_at IS NOT NULL INTO revoked FROM apps a WHERE a.id = fan.app_id FOR SHARE;
        IF revoked THEN
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

-- The claim of 0020 with a cap per app: at most `per_endpoint` posts in flight per endpoint and `per_app`
-- per app, counting those other workers hold. Deliveries an app's cap leaves out stay due for the next claim.
CREATE FUNCTION webhook_claim_deliveries(
    claim_limit integer, per_endpoint integer, per_app integer, lease_s double precision
)
RETURNS TABLE (id bigint, attempts integer, message_id text, type text, body text, endpoint_id uuid, app_id bigint,
               url text, secret text, previous_secret text, job_id text, request_id text)
LANGUAGE sql SET jit = off AS $$
    WITH busy AS (
        SELECT e.id, e.app_id,
               (SELECT count(*) FROM webhook_deliveries f
                WHERE f.endpoint_id = e.id AND f.in_flight_until > now()) AS in_flight
        FROM webhook_endpoints e
        JOIN apps a ON a.id = e.app_id AND a.revoked_at IS NULL
        WHERE e.disabled_at IS NULL
          AND EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.status = 'pending' AND x.next_attempt_at <= now())
    ), endpoints AS (
        SELECT b.id, b.app_id, per_endpoint - b.in_flight AS free,
               per_app - sum(b.in_flight) OVER (PARTITION BY b.app_id) AS app_free
        FROM busy b
    ), candidates AS (
        SELECT d.id, d.next_attempt_at, e.app_free,
               row_number() OVER (PARTITION BY e.app_id ORDER BY d.next_attempt_at, d.id) AS rank_in_app
        FROM endpoints e
        CROSS JOIN LATERAL (
            SELECT d.id, d.next_attempt_at
            FROM webhook_deliveries d
            WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= now()
            ORDER BY d.next_attempt_at, d.id
            LIMIT greatest(least(e.free, e.app_free), 0)
            FOR UPDATE SKIP LOCKED
        ) AS d
    ), due AS (
        SELECT c.id
        FROM candidates c
        WHERE c.rank_in_app <= c.app_free
        ORDER BY c.next_attempt_at, c.id
        LIMIT claim_limit
    )
    UPDATE webhook_deliveries AS d
    SET in_flight_until = now() + make_interval(secs => lease_s),
        next_attempt_at = now() + make_interval(secs => lease_s),
        updated_at = now()
    FROM due, webhook_endpoints AS e, webhook_messages AS m
    WHERE d.id = due.id AND e.id = d.endpoint_id AND m.id = d.message_id
    RETURNING d.id, d.attempts, d.message_id, m.type, m.body::text, e.id, e.app_id, e.url, e.secret,
              CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END,
              m.body #>> '{data,job_id}',
              (SELECT j.request_id FROM recipients r JOIN jobs j ON j.id = r.job_id
               WHERE r.id = m.recipient_id);
$$;
