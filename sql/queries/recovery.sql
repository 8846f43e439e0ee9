-- requeue_stalled_jobs --
-- The LEGACY rule: jobs claimed by a worker of the release before sender liveness (no claimed_by) longer ago
-- than that release let a live claim last: their worker died. Queue them again, marked to ask Mailjet before
-- sending, so nothing goes twice. (Claims with a sender are taken over by its liveness: senders.sql.)
WITH stalled AS (
    UPDATE jobs
    SET status = 'queued', run_at = now(), verify_before_send = true, lost_attempt_at = claimed_at,
        claimed_at = NULL, updated_at = now()
    WHERE status = 'sending' AND claimed_at < now() - make_interval(secs => %(stalled_after_s)s)
      AND claimed_by IS NULL
    RETURNING id, app_id, priority, request_id
), audit AS (
    INSERT INTO job_events (job_id, type, detail)
    SELECT id, 'recovered', jsonb_build_object(
        'reason', 'claimed before sender liveness and not finished within MAILER_SEND_STALLED_AFTER_S (legacy)',
        'rule', 'legacy')
    FROM stalled
)
SELECT id, app_id, priority, request_id FROM stalled;

-- count_unattended_due_jobs --
-- Due jobs, by priority, that no pending wake-up will pick up (their wake-up was taken by a
-- worker that died before claiming them). Empty while any send wake-up is waiting to run.
SELECT j.priority, count(*) AS due
FROM jobs j
WHERE j.status IN ('queued', 'scheduled')
  AND j.run_at <= now() - make_interval(secs => %(grace_s)s)
  AND NOT EXISTS (
      SELECT 1 FROM procrastinate_jobs p
      WHERE p.task_name = %(task_name)s AND p.status = 'todo'
        AND (p.scheduled_at IS NULL OR p.scheduled_at <= now())
  )
GROUP BY j.priority;

-- match_late_events --
-- Events stored while their message's send result was being recorded in another transaction:
-- neither saw the other, so match them now. Only recent events: older ones belong to no message of ours.
UPDATE mailjet_events AS e
SET recipient_id = r.id, applied_at = now()
FROM recipients AS r
WHERE e.applied_at IS NULL
  AND e.message_id IS NOT NULL
  AND e.received_at > now() - make_interval(secs => %(window_s)s)
  AND r.message_id = e.message_id
RETURNING e.id, e.recipient_id, r.job_id AS recipient_job_id;
