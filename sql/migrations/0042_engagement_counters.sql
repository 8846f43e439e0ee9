-- Engagement stats (issue 22): GET /stats adds per UTC day how many recipients were delivered, opened, clicked,
-- bounced, blocked, marked spam and unsubscribed, counted by the triggers that already see every recipient status
-- change (0039: the sender, POST /events through mailer_record_events, test mode, suppressions, unsubscribe).
--
-- Storage: the same counters as the jobs' (job_counts, 0004), with the recipient kinds beside the job kinds
-- (the two sets of names are disjoint). One table means one query per page for /stats and the dashboard, the
-- same primary-key reads, the same shards, and the same rule for retention (counters are history, never
-- deleted: services/retention.py). A twin table would have given the counters a clearer owner but two reads
-- per page and a second copy of every rule.

LOCK TABLE recipients IN SHARE MODE;  -- no change commits between the new triggers and the backfill below

ALTER TABLE job_counts
    DROP CONSTRAINT job_counts_kind_check,
    ADD CONSTRAINT job_counts_kind_check CHECK (kind IN (
        'created', 'sent', 'failed', 'suppressed', 'cancelled',
        'delivered', 'opened', 'clicked', 'bounced', 'blocked', 'spam', 'unsubscribed'));

-- The operator's overview reads every app's counters for 14 days: by day, not by app. `day` never changes
-- on an update, so the counters' increments stay HOT.
CREATE INDEX job_counts_day_idx ON job_counts (day);

-- What a recipient status says happened to the mail: its milestones. A status only moves up (0001's ranks), and
-- a change counts the milestones of its new status that the old one did not have: sent → clicked counts
-- delivered, opened and clicked once each (a click proves an open, as Mailchimp counts it); opened → spam
-- counts spam alone; a duplicate event changes no status and counts nothing. `blocked` (Mailjet refused to
-- send) is no bounce: the mail was never sent. pending, sent, deferred, failed and suppressed have none.
CREATE FUNCTION mailer_recipient_milestones(status text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'delivered' THEN '{delivered}'::text[]
        WHEN 'opened' THEN '{delivered,opened}'::text[]
        WHEN 'clicked' THEN '{delivered,opened,clicked}'::text[]
        WHEN 'unsubscribed' THEN '{delivered,unsubscribed}'::text[]
        WHEN 'spam' THEN '{delivered,spam}'::text[]
        WHEN 'bounced' THEN '{bounced}'::text[]
        WHEN 'blocked' THEN '{blocked}'::text[]
        ELSE '{}'::text[]
    END
$$;

-- 0039's statement, whose activity rows are unchanged, now over one materialized set of changes that also
-- feeds the counters: the app of each change is looked up once for both. Counted on the UTC day of the
-- transaction (now()), as job_counts, in the session's shard, upserted in key order (see 0004).
CREATE OR REPLACE FUNCTION activity_recipients_updated() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan TO off AS $$
BEGIN
    WITH changes AS MATERIALIZED (
        SELECT (SELECT j.app_id FROM jobs j WHERE j.id = n.job_id) AS app_id, n.id, n.job_id, n.email,
               n.message_id, n.status, o.status AS old_status
        FROM new_rows n
        JOIN old_rows o ON o.id = n.id
        WHERE n.status IS DISTINCT FROM o.status AND n.status <> 'pending'  -- a retry's reset is no change to report
    ), activity AS (
        INSERT INTO recipient_activity (app_id, recipient_id, job_id, email, message_id, status)
        SELECT app_id, id, job_id, email, message_id, status
        FROM changes
        ORDER BY id
    )
    INSERT INTO job_counts AS c (app_id, day, kind, shard, count)
    SELECT ch.app_id, (now() AT TIME ZONE 'UTC')::date, m.kind, pg_backend_pid() % 16, count(*)
    FROM changes ch
    CROSS JOIN LATERAL unnest(mailer_recipient_milestones(ch.status)) AS m(kind)
    WHERE m.kind <> ALL (mailer_recipient_milestones(ch.old_status))
    GROUP BY ch.app_id, m.kind
    ORDER BY ch.app_id, m.kind
    ON CONFLICT ON CONSTRAINT job_counts_pkey DO UPDATE SET count = c.count + excluded.count;
    RETURN NULL;
END;
$$;

-- A recipient stored with a status other than pending (row trigger, 0039): every milestone of that status.
CREATE OR REPLACE FUNCTION activity_recipient_inserted() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan TO off AS $$
BEGIN
    WITH job AS MATERIALIZED (
        SELECT j.app_id FROM jobs j WHERE j.id = NEW.job_id
    ), activity AS (
        INSERT INTO recipient_activity (app_id, recipient_id, job_id, email, message_id, status)
        SELECT app_id, NEW.id, NEW.job_id, NEW.email, NEW.message_id, NEW.status FROM job
    )
    INSERT INTO job_counts AS c (app_id, day, kind, shard, count)
    SELECT job.app_id, (now() AT TIME ZONE 'UTC')::date, m.kind, pg_backend_pid() % 16, 1
    FROM job
    CROSS JOIN LATERAL unnest(mailer_recipient_milestones(NEW.status)) AS m(kind)
    ORDER BY m.kind
    ON CONFLICT ON CONSTRAINT job_counts_pkey DO UPDATE SET count = c.count + excluded.count;
    RETURN NULL;
END;
$$;

-- What exists already: every recipient's milestones, on the UTC day of its last change (updated_at; the days of
-- earlier milestones are not kept anywhere cheap to read). One pass over recipients, in this transaction.
INSERT INTO job_counts (app_id, day, kind, shard, count)
SELECT j.app_id, (r.updated_at AT TIME ZONE 'UTC')::date, m.kind, 0, count(*)
FROM recipients r
JOIN jobs j ON j.id = r.job_id
CROSS JOIN LATERAL unnest(mailer_recipient_milestones(r.status)) AS m(kind)
WHERE r.status IN ('delivered', 'opened', 'clicked', 'unsubscribed', 'spam', 'bounced', 'blocked')
GROUP BY 1, 2, 3;
