-- allow_retention_deletes --
-- Let this transaction (only) delete audit events: the one exception the job_events trigger makes.
SELECT set_config('mailer.retention', 'on', true) AS retention;

-- purge_job_bodies --
-- Drop the body (text, html, template variables, attachment contents) of up to `limit` jobs that ended
-- more than `body_days` ago; subject, addresses, headers, attachment names and metadata stay, and so do
-- status, recipients and events. Served by jobs_body_purge_idx (same predicate); updated_at is kept.
WITH due AS (
    SELECT id
    FROM jobs
    WHERE body_purged_at IS NULL AND status IN ('sent', 'failed', 'suppressed', 'cancelled')
      AND updated_at < now() - make_interval(days => %(body_days)s::integer)
    ORDER BY updated_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), purged AS (
    UPDATE jobs AS j
    SET message = (j.message - ARRAY['text', 'html', 'variables', 'attachments'])
                  || CASE WHEN jsonb_typeof(j.message -> 'attachments') = 'array' THEN jsonb_build_object(
                         'attachments',
                         (SELECT coalesce(jsonb_agg(a.attachment - 'content' ORDER BY a.n), '[]'::jsonb)
                          FROM jsonb_array_elements(j.message -> 'attachments') WITH ORDINALITY AS a(attachment, n)))
                     ELSE '{}'::jsonb END,
        body_purged_at = now()
    FROM due
    WHERE j.id = due.id
    RETURNING j.id
)
SELECT count(*) AS purged FROM purged;

-- lock_old_jobs --
-- Up to `limit` jobs that ended more than `days` ago (their bodies purged already), locked for deletion;
-- jobs another transaction holds are left for a later batch. Served by jobs_body_purged_idx.
SELECT id
FROM jobs
WHERE body_purged_at IS NOT NULL
  AND updated_at < now() - make_interval(days => %(days)s::integer)
  AND status IN ('sent', 'failed', 'suppressed', 'cancelled')
ORDER BY updated_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- delete_webhook_messages_of_jobs --
-- The outbound webhook messages about these jobs' recipients, with their fan-outs, deliveries and attempts (no
-- foreign keys between them since 0029). A delivery whose post is in flight simply records nothing when it ends.
WITH doomed AS (
    SELECT m.id, m.created_at
    FROM recipients AS r
    JOIN webhook_messages AS m ON m.recipient_id = r.id
    WHERE r.job_id = ANY(%(job_ids)s::uuid[])
), attempts AS (
    DELETE FROM webhook_attempts AS a
    USING webhook_deliveries AS d, doomed
    WHERE d.message_id = doomed.id AND d.message_created_at = doomed.created_at
      AND a.delivery_id = d.id AND a.message_created_at = d.message_created_at
), fan_outs AS (
    DELETE FROM webhook_fan_outs AS f
    USING doomed
    WHERE f.message_id = doomed.id AND f.message_created_at = doomed.created_at
), deliveries AS (
    DELETE FROM webhook_deliveries AS d
    USING doomed
    WHERE d.message_id = doomed.id AND d.message_created_at = doomed.created_at
), deleted AS (
    DELETE FROM webhook_messages AS m
    USING doomed
    WHERE m.id = doomed.id AND m.created_at = doomed.created_at
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;

-- delete_job_events_of_jobs --
-- These jobs' audit trails (refused by the job_events trigger unless allow_retention_deletes ran first).
WITH deleted AS (
    DELETE FROM job_events
    WHERE job_id = ANY(%(job_ids)s::uuid[])
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;

-- delete_schedule_occurrences_of_jobs --
-- The occurrences that produced these jobs. The scheduler never goes back to a past occurrence, so
-- nothing is produced again; skipped occurrences (no job) stay.
WITH deleted AS (
    DELETE FROM schedule_occurrences
    WHERE job_id = ANY(%(job_ids)s::uuid[])
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;

-- delete_jobs --
-- The jobs themselves with their recipients and recipient_addresses (no foreign key to jobs from either:
-- 0011, 0014); the recipients' Mailjet events go by ON DELETE CASCADE. job_counts is not touched: the
-- counters are history.
WITH addresses AS (
    DELETE FROM recipient_addresses
    WHERE job_id = ANY(%(job_ids)s::uuid[])
), gone_recipients AS (
    DELETE FROM recipients
    WHERE job_id = ANY(%(job_ids)s::uuid[])
), deleted AS (
    DELETE FROM jobs
    WHERE id = ANY(%(job_ids)s::uuid[])
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;

-- delete_unmatched_mailjet_events --
-- Up to `limit` events older than `days` that never matched a message of ours (a message they can
-- still match has its send result stored within minutes). Served by mailjet_events_unmatched_received_idx.
WITH doomed AS (
    SELECT id, occurred_at
    FROM mailjet_events
    WHERE applied_at IS NULL AND received_at < now() - make_interval(days => %(days)s::integer)
    ORDER BY received_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM mailjet_events AS e
    USING doomed
    WHERE e.id = doomed.id AND e.occurred_at = doomed.occurred_at
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;

-- drop_webhook_month --
-- One month of the outbound webhook history (messages, fan-outs, deliveries, attempts) dropped whole, unless a
-- delivery of it is pending or a fan-out waits (migration 0029, mailer_drop_webhook_month).
SELECT mailer_drop_webhook_month(%(month)s::date) AS outcome;

-- delete_finished_queue_jobs --
-- Up to `limit` Procrastinate jobs in a final state whose last event is older than `hours` (its events
-- go by cascade). The same rule as Procrastinate's own delete_old_jobs query, which does it in one
-- unbounded statement over every job and event; this one takes a bounded batch per transaction.
WITH doomed AS (
    SELECT j.id
    FROM procrastinate_jobs AS j
    WHERE j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
      AND (SELECT max(e.at) FROM procrastinate_events AS e WHERE e.job_id = j.id)
          < now() - make_interval(hours => %(hours)s::integer)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM procrastinate_jobs AS p
    USING doomed
    WHERE p.id = doomed.id
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;
