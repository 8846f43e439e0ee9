-- Apps revoked before `mailer apps revoke` stopped everything an app has: apply its effects to them now.
-- Their active schedules are done (they would otherwise keep firing, each occurrence a job the send claim
-- cancels), their endpoints disabled with their pending deliveries (kept pending, they were never claimed nor
-- removed by retention), and their waiting jobs cancelled with the audit event the revoke writes. A job with
-- verify_before_send is left to the send claim, which decides on it as it does for a job revoked in flight.

UPDATE schedules
SET state = 'done', next_occurrence = NULL, finished_at = now(), updated_at = now()
WHERE state = 'active' AND app_id IN (SELECT id FROM apps WHERE revoked_at IS NOT NULL);

UPDATE webhook_endpoints
SET disabled_at = now(), disabled_reason = 'app_revoked', updated_at = now()
WHERE disabled_at IS NULL AND app_id IN (SELECT id FROM apps WHERE revoked_at IS NOT NULL);

UPDATE webhook_deliveries
SET status = 'disabled', updated_at = now()
WHERE status = 'pending'
  AND endpoint_id IN (
      SELECT e.id FROM webhook_endpoints e JOIN apps a ON a.id = e.app_id WHERE a.revoked_at IS NOT NULL
  );

WITH cancelled AS (
    UPDATE jobs
    SET status = 'cancelled', updated_at = now()
    WHERE status IN ('scheduled', 'queued') AND NOT verify_before_send
      AND app_id IN (SELECT id FROM apps WHERE revoked_at IS NOT NULL)
    RETURNING id
)
INSERT INTO job_events (job_id, type, detail)
SELECT id, 'app_revoked', jsonb_build_object('by', 'operator', 'status', 'cancelled') FROM cancelled;
