-- One function for the Mailjet event detail of a webhook body (`data.event` when a Mailjet event made the
-- change): its type, time and Mailjet name, and the curated payload fields made safe for every JSON parser.
-- It was written out in webhook_enqueue (0005, 0020, 0029) and again in the activity feed's query
-- (sql/queries/activity.sql, which returns the same body): two copies that could drift.
--
-- LANGUAGE sql, one SELECT of one expression, no SET, not STRICT, and STABLE (jsonb_build_object is stable;
-- declared IMMUTABLE it would not be inlined): PostgreSQL inlines it into the calling statement, so each
-- caller is planned and runs as with the block written out. Each parameter is a plain column, so reading
-- `payload` ten times costs nothing more (tests/integration/test_webhook_outbox.py checks it is inlined).
CREATE FUNCTION webhook_event_detail(status text, occurred_at timestamptz, mailjet_event text, payload jsonb)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('type', status, 'at', webhook_rfc3339(occurred_at), 'mailjet_event', mailjet_event)
           || jsonb_strip_nulls(jsonb_build_object(
               'url', webhook_json_safe(payload -> 'url'),
               'ip', webhook_json_safe(payload -> 'ip'),
               'geo', webhook_json_safe(payload -> 'geo'),
               'agent', webhook_json_safe(payload -> 'agent'),
               'error', webhook_json_safe(payload -> 'error'),
               'error_related_to', webhook_json_safe(payload -> 'error_related_to'),
               'hard_bounce', webhook_json_safe(payload -> 'hard_bounce'),
               'smtp_reply', webhook_json_safe(payload -> 'smtp_reply'),
               'source', webhook_json_safe(payload -> 'source'),
               'comment', webhook_json_safe(payload -> 'comment')))
$$;

-- As in 0029 (its newest text), with the detail from webhook_event_detail; nothing else changed. It has no SET
-- option to restate: none was ever given (0005, 0020, 0029) nor added by ALTER FUNCTION.
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
                           (SELECT webhook_event_detail(me.status, me.occurred_at, me.name, me.payload)
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
