-- Retention (mailer/services/retention.py): message bodies are purged MAILER_RETENTION_BODY_DAYS after
-- a job ended; jobs, with everything hanging off them, are deleted MAILER_RETENTION_DAYS after it ended.
-- Both work in small batches (FOR UPDATE SKIP LOCKED, one short transaction each), so every candidate
-- list below is a range read of a partial index, never a scan of jobs.

-- When the job's body (text, html, variables, attachment contents) was purged; null while it is kept.
-- (A nullable column without a default: no table rewrite.)
ALTER TABLE jobs ADD COLUMN body_purged_at timestamptz;

-- What the body purge reads: final jobs whose body is still there, oldest change first. A job enters
-- this index when it reaches a final status (an update that is never HOT anyway, as status is indexed)
-- and leaves it when its body is purged. The predicate must stay word for word that of purge_job_bodies.
CREATE INDEX jobs_body_purge_idx ON jobs (updated_at)
    WHERE body_purged_at IS NULL AND status IN ('sent', 'failed', 'suppressed', 'cancelled');
-- What the deletion reads: purged jobs by their last change. Only retention writes it, never the send path.
CREATE INDEX jobs_body_purged_idx ON jobs (updated_at) WHERE body_purged_at IS NOT NULL;

-- Deleting a job checks the occurrence that produced it (and retention deletes that row): by job.
CREATE INDEX schedule_occurrences_job_idx ON schedule_occurrences (job_id) WHERE job_id IS NOT NULL;
-- Events that never matched a message of ours, oldest first.
CREATE INDEX mailjet_events_unmatched_received_idx ON mailjet_events (received_at) WHERE applied_at IS NULL;
-- Webhook messages (and their deliveries and attempts) and idempotency keys past the horizon, oldest first.
CREATE INDEX webhook_messages_created_idx ON webhook_messages (created_at);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- The audit trail stays append-only, with one exception: retention may DELETE the events of the jobs it
-- deletes. It says so with a transaction-local setting (set_config('mailer.retention', 'on', true), i.e.
-- SET LOCAL), which only mailer/store/retention.py sets, and which ends with its transaction. This guards
-- against mistakes, not against a database owner (who could drop the trigger): UPDATE is always refused,
-- and DELETE in any transaction that did not say so.
CREATE OR REPLACE FUNCTION job_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('mailer.retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'job_events is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;
