-- insert_suppression --
-- Add an address to an app's list; nothing (no row) when it is already there.
INSERT INTO suppressions (app_id, email, reason, source, scope)
VALUES (%(app_id)s, lower(%(email)s), %(reason)s, %(source)s, %(scope)s)
ON CONFLICT ON CONSTRAINT suppressions_pkey DO NOTHING
RETURNING email, reason, source, scope, created_at;

-- widen_suppression --
-- A bulk-only entry of an app's list becomes one for all mail; the entry, when it was bulk-only.
UPDATE suppressions
SET scope = 'all'
WHERE app_id = %(app_id)s AND email = lower(%(email)s) AND scope = 'bulk'
RETURNING email, reason, source, scope, created_at;

-- get_suppression --
-- One entry of an app's list, the address matched case-insensitively.
SELECT email, reason, source, scope, created_at
FROM suppressions
WHERE app_id = %(app_id)s AND email = lower(%(email)s);

-- delete_suppression --
-- Take an address off an app's list; the address removed, if it was there.
DELETE FROM suppressions
WHERE app_id = %(app_id)s AND email = lower(%(email)s)
RETURNING email;

-- list_suppressions --
-- One page of an app's list, newest first (ties by address), after the cursor's position if any;
-- optionally only one address.
SELECT email, reason, source, scope, created_at
FROM suppressions
WHERE app_id = %(app_id)s
  AND (%(email)s::text IS NULL OR email = lower(%(email)s::text))
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (created_at, email) < (%(after_created_at)s::timestamptz, %(after_email)s::text))
ORDER BY created_at DESC, email DESC
LIMIT %(limit)s;

-- suppress_from_events --
-- Add the addresses of these matched events that suppress (hard bounce, blocked, spam, unsub) to
-- the list of the app that sent the message (the statement is in migration 0034: mailer_record_events runs it
-- too).
SELECT app_id, email FROM mailer_suppress_from_events(%(event_ids)s::bigint[]);

-- list_suppressed_recipients --
-- The recipients of these jobs whose address is on their app's list (one lookup per send batch): an entry
-- of scope 'bulk' counts for bulk jobs only. The jobs are claimed ones: in jobs_live (0028).
SELECT r.job_id, r.kind, r.position, r.email
FROM recipients r
JOIN jobs j ON j.id = r.job_id AND j.status IN ('scheduled', 'queued', 'sending')
JOIN suppressions s ON s.app_id = j.app_id AND s.email = lower(r.email) AND (s.scope = 'all' OR j.priority = 'bulk')
WHERE r.job_id = ANY(%(job_ids)s);

-- mark_jobs_suppressed --
-- Every recipient of these sending jobs is suppressed: the job ends without a Mailjet call.
WITH suppressed AS (
    UPDATE jobs
    SET status = 'suppressed', last_error = NULL, verify_before_send = false, claimed_at = NULL, lost_attempt_at = NULL,
        updated_at = now()
    WHERE id = ANY(%(ids)s) AND status IN ('scheduled', 'queued', 'sending') AND status || '' = 'sending'  -- by key (see mark_jobs_sent)
    RETURNING id
), suppressed_recipients AS (
    UPDATE recipients
    SET status = 'suppressed', updated_at = now()
    FROM suppressed
    WHERE recipients.job_id = suppressed.id AND recipients.status = 'pending'
)
INSERT INTO job_events (job_id, type, detail)
SELECT s.id, 'suppressed', jsonb_build_object('recipients', (
    SELECT jsonb_agg(r.email ORDER BY CASE r.kind WHEN 'to' THEN 0 WHEN 'cc' THEN 1 ELSE 2 END, r.position)
    FROM recipients r WHERE r.job_id = s.id))
FROM suppressed s
RETURNING job_id;

-- suppress_recipients --
-- Some recipients of these sending jobs were left out because they are suppressed: mark them and
-- note the skipped addresses in the job's audit trail.
WITH marked AS (
    UPDATE recipients AS r
    SET status = 'suppressed', updated_at = now()
    FROM jsonb_to_recordset(%(recipients)s) AS x(job_id uuid, kind text, position integer), jobs AS j
    WHERE r.job_id = x.job_id AND r.kind = x.kind AND r.position = x.position
      AND j.id = r.job_id AND j.status = 'sending'
      AND (SELECT rank FROM recipient_statuses WHERE status = r.status)
          < (SELECT rank FROM recipient_statuses WHERE status = 'suppressed')
    RETURNING r.job_id, r.kind, r.position, r.email
)
INSERT INTO job_events (job_id, type, detail)
SELECT job_id, 'recipients_suppressed',
       jsonb_build_object('recipients', jsonb_agg(email ORDER BY CASE kind WHEN 'to' THEN 0 WHEN 'cc' THEN 1 ELSE 2 END,
                                                  position))
FROM marked
GROUP BY job_id
RETURNING job_id;

-- enqueue_unsubscribed_webhook --
-- An `email.unsubscribed` message for the app's webhooks (one-click unsubscribe), when an enabled endpoint of a
-- live app takes that type; fanned out by the worker as the trigger's messages are (0020/0029).
WITH message AS (
    INSERT INTO webhook_messages (app_id, recipient_id, type, body, created_at)
    SELECT a.id, NULL, 'email.unsubscribed',
           jsonb_build_object(
               'type', 'email.unsubscribed',
               'timestamp', webhook_rfc3339(clock_timestamp()),
               'data', jsonb_build_object(
                   'job_id', %(job_id)s::text,
                   'recipient', lower(%(email)s::text),
                   'message_id', NULL,
                   'status', 'unsubscribed',
                   'metadata', (SELECT j.metadata FROM jobs j WHERE j.id = %(job_id)s::uuid AND j.app_id = a.id),
                   'event', jsonb_build_object('type', 'unsubscribed', 'at', webhook_rfc3339(clock_timestamp()),
                                               'source', 'one-click'))),
           clock_timestamp()
    FROM apps a
    WHERE a.id = %(app_id)s AND a.revoked_at IS NULL
      AND EXISTS (SELECT 1 FROM webhook_endpoints e
                  WHERE e.app_id = a.id AND e.disabled_at IS NULL AND e.events && ARRAY['*', 'unsubscribed'])
    RETURNING id, created_at
)
INSERT INTO webhook_fan_outs (message_id, message_created_at)
SELECT id, created_at FROM message
RETURNING message_id;

-- unsubscribe_recipients --
-- The recipient a one-click link names moves to `unsubscribed`, as Mailjet's `unsub` moves it (mailer_record_events,
-- 0034): the triggers on recipients then feed /activity and fan out `email.unsubscribed`. The token names the
-- message's first To recipient, so only that one moves (kind 'to', lowest position, its address in any case, of a
-- job of its app): the same address in Cc, or twice in To, is another recipient. It moves from `sent` up to below
-- `unsubscribed`: a `pending` one (a re-queued job) is the sender's (it would make it `suppressed`) and is not
-- locked; spam, failed, suppressed stay. It is locked before the suppression is written, the order
-- mailer_record_events takes (recipients, then suppressions), so the two cannot deadlock. The outer UPDATE names
-- the partition key too, so it plans and locks one month partition, not all. The id of the recipient moved.
WITH first_to AS (
    SELECT r.id
    FROM recipients r
    WHERE r.job_id = %(job_id)s AND r.kind = 'to' AND lower(r.email) = lower(%(email)s)
      AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = %(job_id)s AND j.app_id = %(app_id)s)
    ORDER BY r.position
    LIMIT 1
), target AS (
    SELECT r.id
    FROM recipients r
    WHERE r.job_id = %(job_id)s AND r.id = (SELECT id FROM first_to)
      AND (SELECT rank FROM recipient_statuses WHERE status = r.status)
          BETWEEN (SELECT rank FROM recipient_statuses WHERE status = 'sent')
              AND (SELECT rank FROM recipient_statuses WHERE status = 'unsubscribed') - 1
    FOR UPDATE OF r
)
UPDATE recipients AS r
SET status = 'unsubscribed', updated_at = now()
FROM target t
WHERE r.id = t.id AND r.job_id = %(job_id)s
  AND (SELECT rank FROM recipient_statuses WHERE status = r.status)
      BETWEEN (SELECT rank FROM recipient_statuses WHERE status = 'sent')
          AND (SELECT rank FROM recipient_statuses WHERE status = 'unsubscribed') - 1
RETURNING r.id;
