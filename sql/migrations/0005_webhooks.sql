-- Signed outbound webhooks (Standard Webhooks): endpoints per app, an outbox of messages filled by
-- a trigger in the same transaction as each recipient status change, one delivery per message and
-- endpoint, and a log of every attempt.

CREATE TABLE webhook_endpoints (
    id                          uuid CONSTRAINT webhook_endpoints_pkey PRIMARY KEY DEFAULT gen_random_uuid(),
    app_id                      bigint NOT NULL CONSTRAINT webhook_endpoints_app_id_fkey REFERENCES apps (id),
    url                         text NOT NULL,
    events                      text[] NOT NULL,
    -- whsec_ + base64 of the key; kept in the clear because every delivery is signed with it
    secret                      text NOT NULL,
    -- after a rotation the old secret keeps signing (a second signature) until it expires
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    disabled_at                 timestamptz,
    disabled_reason             text,
    -- the first failure since the last success: an endpoint failing for too long is disabled
    failing_since               timestamptz,
    last_success_at             timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_url_check CHECK (url ~ '^https?://' AND length(url) <= 2048),
    CONSTRAINT webhook_endpoints_events_check CHECK (
        cardinality(events) > 0
        AND events <@ ARRAY['*', 'sent', 'delivered', 'opened', 'clicked', 'deferred', 'bounced', 'blocked',
                            'spam', 'unsubscribed', 'failed', 'suppressed']
    ),
    CONSTRAINT webhook_endpoints_secret_check CHECK (secret LIKE 'whsec\_%'),
    CONSTRAINT webhook_endpoints_previous_secret_check CHECK (
        (previous_secret IS NULL) = (previous_secret_expires_at IS NULL)
    ),
    CONSTRAINT webhook_endpoints_disabled_reason_check CHECK (disabled_reason IS NULL OR disabled_at IS NOT NULL)
);
CREATE INDEX webhook_endpoints_app_idx ON webhook_endpoints (app_id, created_at, id);
-- The fan-out trigger looks up the enabled endpoints of an app on every status change.
CREATE INDEX webhook_endpoints_enabled_idx ON webhook_endpoints (app_id) WHERE disabled_at IS NULL;

-- The outbox: one message per recipient status change that some endpoint wanted. The body is built
-- once, so every attempt to every endpoint sends the same bytes.
CREATE TABLE webhook_messages (
    -- the Standard Webhooks `webhook-id`
    id            text CONSTRAINT webhook_messages_pkey PRIMARY KEY
                  DEFAULT 'msg_' || replace(gen_random_uuid()::text, '-', ''),
    app_id        bigint NOT NULL CONSTRAINT webhook_messages_app_id_fkey REFERENCES apps (id),
    recipient_id  bigint CONSTRAINT webhook_messages_recipient_id_fkey REFERENCES recipients (id) ON DELETE SET NULL,
    type          text NOT NULL,
    body          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX webhook_messages_recipient_idx ON webhook_messages (recipient_id, created_at);

CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT webhook_deliveries_pkey PRIMARY KEY,
    message_id       text NOT NULL CONSTRAINT webhook_deliveries_message_id_fkey REFERENCES webhook_messages (id),
    endpoint_id      uuid NOT NULL
                     CONSTRAINT webhook_deliveries_endpoint_id_fkey REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending',
    -- attempts in the current cycle (a replay starts a new one); they index the retry schedule
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- set while a worker posts it: nobody else claims it before then; a dead worker's claim expires
    in_flight_until  timestamptz,
    last_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_status_check CHECK (status IN ('pending', 'succeeded', 'failed', 'disabled')),
    CONSTRAINT webhook_deliveries_message_endpoint_key UNIQUE (message_id, endpoint_id)
);
-- Claiming due deliveries, per endpoint (each endpoint gets a fair share of the workers).
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_in_flight_idx ON webhook_deliveries (endpoint_id)
    WHERE in_flight_until IS NOT NULL;
-- GET /webhooks/{id}/deliveries, newest first.
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);

CREATE TABLE webhook_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT webhook_attempts_pkey PRIMARY KEY,
    delivery_id  bigint NOT NULL
                 CONSTRAINT webhook_attempts_delivery_id_fkey REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL,
    status_code  integer,
    latency_ms   integer NOT NULL,
    error        text
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- RFC 3339 in UTC, to the microsecond: a subscriber can order one recipient's changes by it, even
-- two made in the same millisecond.
CREATE FUNCTION webhook_rfc3339(at timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- A JSON value safe for every JSON parser: integers beyond 2^53 become strings.
CREATE FUNCTION webhook_json_safe(value jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    -- (CASE, not AND: only a number may be cast to numeric, and CASE keeps that order)
    SELECT CASE WHEN jsonb_typeof(value) IS DISTINCT FROM 'number' THEN value
                WHEN abs(value::numeric) > 9007199254740991 THEN to_jsonb(value #>> '{}')
                ELSE value END
$$;

-- The outbox fan-out for a set of recipients whose status just changed: one message per change
-- some enabled endpoint of the app wants ('*' or the status in its events), one delivery per such
-- endpoint. Runs inside the transaction of the change, so a rollback leaves no message behind.
CREATE FUNCTION webhook_enqueue(changed_ids bigint[]) RETURNS void LANGUAGE sql AS $$
    WITH changed AS (
        SELECT r.id AS recipient_id, r.job_id, r.email, r.message_id, r.status, j.app_id, j.metadata,
               clock_timestamp() AS at
        FROM recipients r
        JOIN jobs j ON j.id = r.job_id
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
        RETURNING id, app_id, type
    )
    INSERT INTO webhook_deliveries (message_id, endpoint_id)
    SELECT m.id, e.id
    FROM messages m
    JOIN webhook_endpoints e
      ON e.app_id = m.app_id AND e.disabled_at IS NULL AND e.events && ARRAY['*', substr(m.type, 7)];
$$;

-- Statement-level triggers with transition tables: a batch of 50 recipients is one call. (PostgreSQL
-- allows no column list, `UPDATE OF status`, on a trigger with transition tables; comparing old and
-- new rows does the same.) Cheap when no endpoint is enabled anywhere: one index probe.
CREATE FUNCTION webhook_recipients_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NULL) THEN
        PERFORM webhook_enqueue(ARRAY(
            SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE n.status IS DISTINCT FROM o.status
        ));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER recipients_webhook_fan_out
    AFTER UPDATE ON recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_recipients_updated();

-- A recipient stored with a status other than `pending` from the start is a change too.
CREATE FUNCTION webhook_recipients_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NULL) THEN
        PERFORM webhook_enqueue(ARRAY(SELECT n.id FROM new_rows n WHERE n.status <> 'pending'));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER recipients_webhook_fan_out_insert
    AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_recipients_inserted();
