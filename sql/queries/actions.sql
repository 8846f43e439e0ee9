-- cancel_job --
-- Cancel a job that has not been claimed for sending yet.
WITH cancelled AS (
    UPDATE jobs
    SET status = 'cancelled', updated_at = now()
    WHERE id = %(id)s AND app_id = %(app_id)s AND status IN ('scheduled', 'queued')
    RETURNING id
)
INSERT INTO job_events (job_id, type, detail)
SELECT id, 'cancelled', jsonb_build_object('by', 'api') FROM cancelled
RETURNING job_id;

-- retry_job --
-- Queue a failed job again with a fresh budget of attempts; its id and history stay.
WITH target AS (
    SELECT id, attempts, last_error
    FROM jobs
    WHERE id = %(id)s AND app_id = %(app_id)s AND status = 'failed'
    FOR UPDATE
), retried AS (
    UPDATE jobs
    SET status = 'queued', run_at = now(), attempts = 0, updated_at = now()
    FROM target
    WHERE jobs.id = target.id
    RETURNING jobs.id, jobs.priority, target.attempts AS previous_attempts, target.last_error
), reset_recipients AS (
    UPDATE recipients
    SET status = 'pending', updated_at = now()
    FROM retried
    WHERE recipients.job_id = retried.id AND recipients.status = 'failed'
), audit AS (
    INSERT INTO job_events (job_id, type, detail)
    SELECT id, 'retried', jsonb_build_object('by', 'api', 'previous_attempts', previous_attempts,
                                             'last_error', last_error)
    FROM retried
)
SELECT id, priority FROM retried;
