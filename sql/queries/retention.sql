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
    WHERE j.id = due.id AND j.status IN ('sent', 'failed', 'suppressed', 'cancelled')
    RETURNING j.id
)
SELECT count(*) AS purged FROM purged;

-- month_has_live_jobs --
-- Whether jobs_live still holds a job made in `month` (whose recipients and audit trail are in that month's
-- partitions): a range read of jobs_live_pkey.
SELECT EXISTS (
    SELECT FROM jobs_live
    WHERE id >= mailer_month_bound('uuid7', %(month)s::date)::uuid
      AND id < mailer_month_bound('uuid7', (%(month)s::date + interval '1 month')::date)::uuid
) AS waiting;

-- month_has_recently_ended_jobs --
-- Whether jobs_done holds a job made in `month` that ended after `ended_after` (now - MAILER_RETENTION_DAYS): a
-- job sent long after it was made keeps its month for the horizon after it ended. A scan of that month's
-- partition (pruned by the id range), once an hour per month past the horizon.
SELECT EXISTS (
    SELECT FROM jobs_done
    WHERE id >= mailer_month_bound('uuid7', %(month)s::date)::uuid
      AND id < mailer_month_bound('uuid7', (%(month)s::date + interval '1 month')::date)::uuid
      AND updated_at > %(ended_after)s::timestamptz
) AS recent;

-- lock_jobs_done --
-- The lock a month's drop takes on jobs_done anyway, taken before the checks that must hold at the drop: no job
-- moves into or out of jobs_done until the transaction ends.
LOCK TABLE jobs_done IN ACCESS EXCLUSIVE MODE;

-- delete_schedule_occurrences_of_month --
-- The occurrences that produced the jobs of a month whose partitions were dropped. The scheduler never goes
-- back to a past occurrence, so nothing is produced again; skipped occurrences (no job) stay. Served by
-- schedule_occurrences_job_idx; a month has as many as its jobs made by schedules.
WITH deleted AS (
    DELETE FROM schedule_occurrences
    WHERE job_id >= mailer_month_bound('uuid7', %(month)s::date)::uuid
      AND job_id < mailer_month_bound('uuid7', (%(month)s::date + interval '1 month')::date)::uuid
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

-- delete_finished_webhook_replays --
-- Up to `limit` replays by window that finished more than `days` ago, oldest first (webhook_replays_finished_idx,
-- 0043). A running one is never deleted; deliveries keep their replay_id (no foreign key, 0040).
WITH doomed AS (
    SELECT id
    FROM webhook_replays
    WHERE finished_at IS NOT NULL AND finished_at < now() - make_interval(days => %(days)s::integer)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM webhook_replays AS w
    USING doomed
    WHERE w.id = doomed.id
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;
