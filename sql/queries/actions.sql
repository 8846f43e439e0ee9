-- cancel_job --
-- Cancel a job that has not been claimed for sending yet.
WITH cancelled AS (
    UPDATE jobs
    SET status = 'cancelled', lost_attempt_at = NULL, updated_at = now()
    WHERE id = %(id)s AND app_id = %(app_id)s AND status IN ('scheduled', 'queued')
    RETURNING id
)
INSERT INTO job_events (job_id, type, detail)
SELECT id, 'cancelled', jsonb_build_object('by', 'api') FROM cancelled
RETURNING job_id;

-- retry_job --
-- Queue a failed job again with a fresh budget of attempts; its id and history stay. Recipients
-- left out as suppressed are screened again at the next attempt (the list may have changed); reset to pending,
-- they lose their milestones (0045): a new send counts its delivery again.
-- A job whose body retention has purged has nothing left to send.
WITH target AS (
    SELECT id, attempts, last_error
    FROM jobs
    WHERE id = %(id)s AND app_id = %(app_id)s AND status = 'failed' AND body_purged_at IS NULL
    FOR UPDATE
), retried AS (
    UPDATE jobs
    SET status = 'queued', run_at = now(), attempts = 0, updated_at = now()
    FROM target
    WHERE jobs.id = target.id AND jobs.status = 'failed'
    RETURNING jobs.id, jobs.priority, target.attempts AS previous_attempts, target.last_error
), reset_recipients AS (
    UPDATE recipients
    SET status = 'pending', milestones = 0, updated_at = now()
    FROM retried
    WHERE recipients.job_id = retried.id AND recipients.status IN ('failed', 'suppressed')
), audit AS (
    INSERT INTO job_events (job_id, type, detail)
    SELECT id, 'retried', jsonb_build_object('by', 'api', 'previous_attempts', previous_attempts,
                                             'last_error', last_error)
    FROM retried
)
SELECT id, priority FROM retried;

-- reschedule_job --
-- Move a job that is still waiting for its send_at; a time in the past queues it now.
WITH moved AS (
    UPDATE jobs
    SET send_at = %(send_at)s, run_at = greatest(%(send_at)s, now()),
        status = CASE WHEN %(send_at)s > now() THEN 'scheduled' ELSE 'queued' END, updated_at = now()
    WHERE id = %(id)s AND app_id = %(app_id)s AND status = 'scheduled'
    RETURNING id, status, run_at, priority
), audit AS (
    INSERT INTO job_events (job_id, type, detail)
    SELECT id, 'rescheduled', jsonb_build_object('by', 'api', 'send_at', %(send_at)s::timestamptz) FROM moved
)
SELECT id, status, run_at, priority FROM moved;
