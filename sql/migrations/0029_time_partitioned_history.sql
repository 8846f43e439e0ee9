-- Issue 19, hot and cold apart, for the history keyed by time: Mailjet events, outbound webhook messages with
-- their fan-outs, deliveries and attempts, and idempotency keys move into month partitions (migration 0027's
-- scheme), so that retention drops whole months instead of deleting rows. An existing installation's rows are
-- moved here, set-based (one INSERT ... SELECT per table); the tables are locked while it runs.
--
-- Keys that must stay unique across partitions (README, "Partitioned history"):
-- * mailjet_events by occurred_at, the event's own `time`: the fingerprint hashes the raw event, `time`
--   included, so the same raw event always has the same occurred_at and UNIQUE (fingerprint, occurred_at) is the
--   old UNIQUE (fingerprint). An event without a plausible `time` (mailer/mailjet/events.py) is stamped with
--   its arrival, here too for the rows moved.
-- * The webhook tables by their message's created_at, which every child row carries (message_created_at): a
--   month's message, fan-outs, deliveries and attempts are dropped together. The foreign keys between them go:
--   PostgreSQL refuses to drop a partition of a referenced table, and DETACH first joins the whole referencing
--   table against the partition under an ACCESS EXCLUSIVE lock (480 ms for 1M rows each side, growing with the
--   history). The rows are written only by webhook_enqueue / webhook_expand_fan_outs / record_webhook_attempt,
--   which take the key from the parent row. Message ids ('msg_' + a random UUID) and the identity ids are unique
--   by construction; the constraints include the partition key as PostgreSQL requires.
-- * idempotency_keys by created_at: (app_id, key) is unique in the window that matters because lookup and insert
--   run under the transaction-scoped advisory lock of the key (lock_idempotency_key, PgBouncer-safe).

-- Gone with 0028's partitioned recipients too; nothing here relies on them.
ALTER TABLE mailjet_events DROP CONSTRAINT IF EXISTS mailjet_events_recipient_id_fkey;
ALTER TABLE webhook_messages DROP CONSTRAINT IF EXISTS webhook_messages_recipient_id_fkey;

ALTER TABLE mailjet_events RENAME TO mailjet_events_unpartitioned;
ALTER SEQUENCE mailjet_events_id_seq RENAME TO mailjet_events_unpartitioned_id_seq;
ALTER TABLE webhook_messages RENAME TO webhook_messages_unpartitioned;
ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_unpartitioned;
ALTER SEQUENCE webhook_deliveries_id_seq RENAME TO webhook_deliveries_unpartitioned_id_seq;
ALTER TABLE webhook_attempts RENAME TO webhook_attempts_unpartitioned;
ALTER SEQUENCE webhook_attempts_id_seq RENAME TO webhook_attempts_unpartitioned_id_seq;
ALTER TABLE webhook_fan_outs RENAME TO webhook_fan_outs_unpartitioned;
ALTER SEQUENCE webhook_fan_outs_id_seq RENAME TO webhook_fan_outs_unpartitioned_id_seq;
ALTER TABLE idempotency_keys RENAME TO idempotency_keys_unpartitioned;

CREATE TABLE mailjet_events (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    fingerprint   text NOT NULL,
    name          text NOT NULL,
    status        text CONSTRAINT mailjet_events_status_check CHECK (status IN (
                      'pending', 'sent', 'deferred', 'delivered', 'bounced', 'blocked', 'opened', 'clicked',
                      'unsubscribed', 'spam', 'failed', 'suppressed')),
    occurred_at   timestamptz NOT NULL,
    message_id    bigint,
    custom_id     text,
    email         text,
    suppresses    boolean NOT NULL DEFAULT false,
    payload       jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    recipient_id  bigint,
    applied_at    timestamptz
) PARTITION BY RANGE (occurred_at);

CREATE TABLE webhook_messages (
    id            text NOT NULL DEFAULT 'msg_' || replace(gen_random_uuid()::text, '-', ''),
    app_id        bigint NOT NULL CONSTRAINT webhook_messages_app_id_fkey REFERENCES apps (id),
    recipient_id  bigint,
    type          text NOT NULL,
    body          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
) PARTITION BY RANGE (created_at);

CREATE TABLE webhook_deliveries (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    message_id          text NOT NULL,
    message_created_at  timestamptz NOT NULL,
    endpoint_id         uuid NOT NULL
                        CONSTRAINT webhook_deliveries_endpoint_id_fkey REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status              text NOT NULL DEFAULT 'pending'
                        CONSTRAINT webhook_deliveries_status_check CHECK (status IN ('pending', 'succeeded', 'failed', 'disabled')),
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    in_flight_until     timestamptz,
    last_attempt_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (message_created_at);

CREATE TABLE webhook_attempts (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    delivery_id         bigint NOT NULL,
    message_created_at  timestamptz NOT NULL,
    attempted_at        timestamptz NOT NULL,
    status_code         integer,
    latency_ms          integer NOT NULL,
    error               text
) PARTITION BY RANGE (message_created_at);

CREATE TABLE webhook_fan_outs (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    message_id          text NOT NULL,
    message_created_at  timestamptz NOT NULL,
    after_endpoint      uuid
) PARTITION BY RANGE (message_created_at);

CREATE TABLE idempotency_keys (
    app_id           bigint NOT NULL CONSTRAINT idempotency_keys_app_id_fkey REFERENCES apps (id),
    key              text NOT NULL,
    request_hash     text NOT NULL,
    response_status  integer NOT NULL,
    response_body    jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);

INSERT INTO month_partitioned_tables (parent, kind) VALUES
    ('mailjet_events', 'time'), ('webhook_messages', 'time'), ('webhook_deliveries', 'time'),
    ('webhook_attempts', 'time'), ('webhook_fan_outs', 'time'), ('idempotency_keys', 'time');

-- An event's time is kept when it is plausible: at most 28 days before its arrival (the month before this one
-- always has a partition) and 1 day after (the same rule as mailer/mailjet/events.py).
CREATE FUNCTION mailer_plausible_event_time(occurred_at timestamptz, received_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN occurred_at >= received_at - interval '28 days' AND occurred_at <= received_at + interval '1 day'
                THEN occurred_at ELSE received_at END;
$$;

-- The months the moved rows fall in, and from this one to 3 ahead (MAILER_PARTITIONS_AHEAD_MONTHS's default),
-- also for a table with no rows; months in UTC whatever the session's TimeZone.
SELECT mailer_ensure_month_partitions(
    'mailjet_events', 'time',
    (least(min(mailer_plausible_event_time(occurred_at, received_at)), now()) AT TIME ZONE 'UTC')::date,
    (greatest(max(mailer_plausible_event_time(occurred_at, received_at)), now() + interval '3 months')
        AT TIME ZONE 'UTC')::date)
FROM mailjet_events_unpartitioned;
SELECT mailer_ensure_month_partitions(p.parent, 'time', (least(w.first, now()) AT TIME ZONE 'UTC')::date,
                                      (greatest(w.last, now() + interval '3 months') AT TIME ZONE 'UTC')::date)
FROM (SELECT min(created_at) AS first, max(created_at) AS last FROM webhook_messages_unpartitioned) AS w,
     (VALUES ('webhook_messages'::regclass), ('webhook_deliveries'), ('webhook_attempts'), ('webhook_fan_outs')) AS p(parent);
SELECT mailer_ensure_month_partitions(
    'idempotency_keys', 'time', (least(min(created_at), now()) AT TIME ZONE 'UTC')::date,
    (greatest(max(created_at), now() + interval '3 months') AT TIME ZONE 'UTC')::date)
FROM idempotency_keys_unpartitioned;

INSERT INTO mailjet_events (id, fingerprint, name, status, occurred_at, message_id, custom_id, email, suppresses,
                            payload, received_at, recipient_id, applied_at)
OVERRIDING SYSTEM VALUE
SELECT id, fingerprint, name, status, mailer_plausible_event_time(occurred_at, received_at), message_id, custom_id,
       email, suppresses, payload, received_at, recipient_id, applied_at
FROM mailjet_events_unpartitioned;

INSERT INTO webhook_messages (id, app_id, recipient_id, type, body, created_at)
SELECT id, app_id, recipient_id, type, body, created_at
FROM webhook_messages_unpartitioned;

INSERT INTO webhook_deliveries (id, message_id, message_created_at, endpoint_id, status, attempts, next_attempt_at,
                                in_flight_until, last_attempt_at, created_at, updated_at)
OVERRIDING SYSTEM VALUE
SELECT d.id, d.message_id, m.created_at, d.endpoint_id, d.status, d.attempts, d.next_attempt_at,
       d.in_flight_until, d.last_attempt_at, d.created_at, d.updated_at
FROM webhook_deliveries_unpartitioned AS d
JOIN webhook_messages_unpartitioned AS m ON m.id = d.message_id;

INSERT INTO webhook_attempts (id, delivery_id, message_created_at, attempted_at, status_code, latency_ms, error)
OVERRIDING SYSTEM VALUE
SELECT a.id, a.delivery_id, m.created_at, a.attempted_at, a.status_code, a.latency_ms, a.error
FROM webhook_attempts_unpartitioned AS a
JOIN webhook_deliveries_unpartitioned AS d ON d.id = a.delivery_id
JOIN webhook_messages_unpartitioned AS m ON m.id = d.message_id;

INSERT INTO webhook_fan_outs (id, message_id, message_created_at, after_endpoint)
OVERRIDING SYSTEM VALUE
SELECT f.id, f.message_id, m.created_at, f.after_endpoint
FROM webhook_fan_outs_unpartitioned AS f
JOIN webhook_messages_unpartitioned AS m ON m.id = f.message_id;

INSERT INTO idempotency_keys (app_id, key, request_hash, response_status, response_body, created_at)
SELECT app_id, key, request_hash, response_status, response_body, created_at
FROM idempotency_keys_unpartitioned;

-- New ids continue after the moved ones.
SELECT setval(pg_get_serial_sequence('mailjet_events', 'id'),
              greatest((SELECT max(id) FROM mailjet_events), nextval('mailjet_events_unpartitioned_id_seq')));
SELECT setval(pg_get_serial_sequence('webhook_deliveries', 'id'),
              greatest((SELECT max(id) FROM webhook_deliveries), nextval('webhook_deliveries_unpartitioned_id_seq')));
SELECT setval(pg_get_serial_sequence('webhook_attempts', 'id'),
              greatest((SELECT max(id) FROM webhook_attempts), nextval('webhook_attempts_unpartitioned_id_seq')));
SELECT setval(pg_get_serial_sequence('webhook_fan_outs', 'id'),
              greatest((SELECT max(id) FROM webhook_fan_outs), nextval('webhook_fan_outs_unpartitioned_id_seq')));

DROP TABLE webhook_attempts_unpartitioned, webhook_fan_outs_unpartitioned, webhook_deliveries_unpartitioned,
           webhook_messages_unpartitioned, mailjet_events_unpartitioned, idempotency_keys_unpartitioned;

-- Keys and indexes after the load (one build per partition); each unique one includes the partition key.
ALTER TABLE mailjet_events ADD CONSTRAINT mailjet_events_pkey PRIMARY KEY (id, occurred_at);
ALTER TABLE mailjet_events ADD CONSTRAINT mailjet_events_fingerprint_key UNIQUE (fingerprint, occurred_at);
CREATE INDEX mailjet_events_recipient_idx ON mailjet_events (recipient_id, occurred_at) WHERE recipient_id IS NOT NULL;
CREATE INDEX mailjet_events_unmatched_message_idx ON mailjet_events (message_id) WHERE applied_at IS NULL;
CREATE INDEX mailjet_events_unmatched_custom_idx ON mailjet_events (custom_id) WHERE applied_at IS NULL;
CREATE INDEX mailjet_events_unmatched_received_idx ON mailjet_events (received_at) WHERE applied_at IS NULL;

ALTER TABLE webhook_messages ADD CONSTRAINT webhook_messages_pkey PRIMARY KEY (id, created_at);
CREATE INDEX webhook_messages_recipient_idx ON webhook_messages (recipient_id, created_at);

ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (id, message_created_at);
ALTER TABLE webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_message_endpoint_key UNIQUE (message_id, message_created_at, endpoint_id);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_in_flight_idx ON webhook_deliveries (endpoint_id) WHERE in_flight_until IS NOT NULL;
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- The oldest month with a pending delivery, for the claim's bound (below).
CREATE INDEX webhook_deliveries_pending_month_idx ON webhook_deliveries (message_created_at) WHERE status = 'pending';

ALTER TABLE webhook_attempts ADD CONSTRAINT webhook_attempts_pkey PRIMARY KEY (id, message_created_at);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

ALTER TABLE webhook_fan_outs ADD CONSTRAINT webhook_fan_outs_pkey PRIMARY KEY (id, message_created_at);
CREATE INDEX webhook_fan_outs_message_idx ON webhook_fan_outs (message_id);

ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (app_id, key, created_at);

-- As in 0020, but each fan-out carries its message's created_at (the partition key of both).
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
        RETURNING id, created_at
    )
    INSERT INTO webhook_fan_outs (message_id, message_created_at)
    SELECT id, created_at FROM messages;
$$;

-- As in 0024, with the message's created_at carried into its deliveries and used to reach rows in one partition.
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
        JOIN webhook_messages m ON m.id = f.message_id AND m.created_at = f.message_created_at
        ORDER BY f.id
        LIMIT max_rows
    LOOP
        EXIT WHEN budget <= 0;
        -- Under the app's lock (0024); the endpoints are read by the next statement, after it.
        SELECT a.revoked_at IS NOT NULL INTO revoked FROM apps a WHERE a.id = fan.app_id FOR SHARE;
        IF revoked THEN
            DELETE FROM webhook_fan_outs WHERE id = fan.id AND message_created_at = fan.created_at;
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
            INSERT INTO webhook_deliveries (message_id, message_created_at, endpoint_id, next_attempt_at)
            SELECT fan.message_id, fan.created_at, t.id, fan.created_at FROM targets t
            ON CONFLICT ON CONSTRAINT webhook_deliveries_message_endpoint_key DO NOTHING
        )
        SELECT count(*), max(t.id::text)::uuid INTO written, last_endpoint FROM targets t;
        budget := budget - written;
        IF written = 0 OR budget > 0 THEN
            DELETE FROM webhook_fan_outs WHERE id = fan.id AND message_created_at = fan.created_at;
        ELSE
            UPDATE webhook_fan_outs SET after_endpoint = last_endpoint
            WHERE id = fan.id AND message_created_at = fan.created_at;
        END IF;
    END LOOP;
    RETURN max_rows - budget;
END;
$$;

-- The claim of 0024, in month partitions. Pending deliveries are few and recent (a replay can make an old one
-- pending again), but nothing in the claim names the partition key, so every month's indexes would be probed
-- once per endpoint (28 months, 200 endpoints: 4x slower than one table). So it first finds the oldest month
-- holding a pending delivery (one probe per partition, oldest first, stopping at the first hit:
-- webhook_deliveries_pending_month_idx) and bounds every read by it; the months before are pruned. PL/pgSQL for
-- the bound as a parameter and for its cached plans; the message is found by its full key. It also returns the
-- delivery's message_created_at, so that recording the attempt reaches the delivery in its one month.
DROP FUNCTION webhook_claim_deliveries(integer, integer, integer, double precision);
CREATE FUNCTION webhook_claim_deliveries(
    claim_limit integer, per_endpoint integer, per_app integer, lease_s double precision
)
RETURNS TABLE (id bigint, attempts integer, message_id text, type text, body text, endpoint_id uuid, app_id bigint,
               url text, secret text, previous_secret text, job_id text, request_id text,
               message_created_at timestamptz)
LANGUAGE plpgsql SET jit = off AS $$
#variable_conflict use_column
DECLARE
    oldest timestamptz;
BEGIN
    SELECT p.message_created_at INTO oldest
    FROM webhook_deliveries p WHERE p.status = 'pending' ORDER BY p.message_created_at LIMIT 1;
    IF oldest IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH busy AS (
        SELECT e.id, e.app_id,
               (SELECT count(*) FROM webhook_deliveries f
                WHERE f.endpoint_id = e.id AND f.in_flight_until > now() AND f.message_created_at >= oldest) AS in_flight
        FROM webhook_endpoints e
        JOIN apps a ON a.id = e.app_id AND a.revoked_at IS NULL
        WHERE e.disabled_at IS NULL
          AND EXISTS (SELECT 1 FROM webhook_deliveries x
                      WHERE x.status = 'pending' AND x.next_attempt_at <= now() AND x.message_created_at >= oldest)
    ), endpoints AS (
        SELECT b.id, b.app_id, per_endpoint - b.in_flight AS free,
               per_app - sum(b.in_flight) OVER (PARTITION BY b.app_id) AS app_free
        FROM busy b
    ), candidates AS (
        SELECT d.id, d.message_created_at, d.next_attempt_at, e.app_free,
               row_number() OVER (PARTITION BY e.app_id ORDER BY d.next_attempt_at, d.id) AS rank_in_app
        FROM endpoints e
        CROSS JOIN LATERAL (
            SELECT d.id, d.message_created_at, d.next_attempt_at
            FROM webhook_deliveries d
            WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= now()
              AND d.message_created_at >= oldest
            ORDER BY d.next_attempt_at, d.id
            LIMIT greatest(least(e.free, e.app_free), 0)
            FOR UPDATE SKIP LOCKED
        ) AS d
    ), due AS (
        SELECT c.id, c.message_created_at
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
    WHERE d.id = due.id AND d.message_created_at = due.message_created_at AND d.message_created_at >= oldest
      AND e.id = d.endpoint_id AND m.id = d.message_id AND m.created_at = d.message_created_at
      AND m.created_at >= oldest
    RETURNING d.id, d.attempts, d.message_id, m.type, m.body::text, e.id, e.app_id, e.url, e.secret,
              CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END,
              m.body #>> '{data,job_id}',
              (SELECT j.request_id FROM recipients r JOIN jobs j ON j.id = r.job_id
               WHERE r.id = m.recipient_id),
              d.message_created_at;
END;
$$;

-- Retention's drop of one month of webhook history: the month's partitions of the four tables go together,
-- unless a delivery of that month is still pending or a fan-out still waits ('busy'). The parents are locked
-- before the check, so no replay or expansion can add work to the month between the check and the drop; the
-- caller sets lock_timeout. 'dropped', 'busy', or 'absent' (no partition of that month).
CREATE FUNCTION mailer_drop_webhook_month(month date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    low timestamptz := mailer_month_bound('time', month)::timestamptz;
    high timestamptz := mailer_month_bound('time', (date_trunc('month', month) + interval '1 month')::date)::timestamptz;
    dropped boolean := false;
BEGIN
    LOCK TABLE ONLY webhook_messages, webhook_fan_outs, webhook_deliveries, webhook_attempts IN ACCESS EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM webhook_deliveries
               WHERE status = 'pending' AND message_created_at >= low AND message_created_at < high)
       OR EXISTS (SELECT 1 FROM webhook_fan_outs WHERE message_created_at >= low AND message_created_at < high) THEN
        RETURN 'busy';
    END IF;
    dropped := mailer_drop_month_partition('webhook_attempts', month);
    dropped := mailer_drop_month_partition('webhook_deliveries', month) OR dropped;
    dropped := mailer_drop_month_partition('webhook_fan_outs', month) OR dropped;
    dropped := mailer_drop_month_partition('webhook_messages', month) OR dropped;
    RETURN CASE WHEN dropped THEN 'dropped' ELSE 'absent' END;
END;
$$;
