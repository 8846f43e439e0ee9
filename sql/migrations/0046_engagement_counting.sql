-- Engagement stats (issue 22), step 3 of 3: the triggers that already see every recipient status change (0039:
-- the sender, POST /events through mailer_record_events, test mode, suppressions, unsubscribe) count each
-- recipient's milestones (0045) into job_counts (kinds: 0042), and what exists already is counted once.
--
-- Storage: the same counters as the jobs' (job_counts, 0004), with the recipient kinds beside the job kinds
-- (the two sets of names are disjoint). One table means one query per page for /stats and the dashboard, the
-- same primary-key reads, the same shards, and the same rule for retention (counters are history, never
-- deleted: services/retention.py). A twin table would have given the counters a clearer owner but two reads
-- per page and a second copy of every rule.
--
-- Locks: SHARE on recipients (no change commits between the new triggers and the backfill below; recipient
-- writers wait until this commits, about 0.7 s per million recipients; reads do not), then only ROW EXCLUSIVE on
-- job_counts, which the sender's own writes take too (jobs → job_counts, then recipients: it waits here, no
-- cycle). Job writes, /logs and /stats go on meanwhile.

LOCK TABLE recipients IN SHARE MODE;

-- Counted on the UTC day of the transaction (now()), as job_counts, in the session's shard, upserted in key
-- order (see 0004). Key order holds within a statement only: two transactions whose backends share a shard
-- (pg_backend_pid() % 16) may update two counter rows in opposite orders across their statements (the sender's
-- record: message ids, then statuses) and deadlock; PostgreSQL aborts one, and the sender's record_retrying
-- (services/send_recording.py) records it again (DeadlockDetected is an OperationalError there).
-- One statement for both writes, not the activity insert and then the counters behind IF EXISTS (skipped when
-- nothing gains a milestone): with one Mailjet event per POST nearly every change gains one, and that split cost
-- 11 µs more per event, measured (BENCHMARKS.md). Its plan is generic (no parameters).
-- 0039's statement trigger, now also counting. A change for the counters is a gain of effective milestones
-- (status or bits); one for the activity feed is, as before, a status change (not a reset to pending): a row
-- whose bits grew while its status stayed (an open after spam) is counted and writes no activity row.
CREATE OR REPLACE FUNCTION activity_recipients_updated() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan TO off AS $$
BEGIN
    WITH pairs AS (
        SELECT n.id, n.job_id, n.email, n.message_id, n.status,
               n.status IS DISTINCT FROM o.status AND n.status <> 'pending' AS reported,
               ((n.milestones | mailer_status_milestone_bits(n.status))
                & ~(o.milestones | mailer_status_milestone_bits(o.status)))::smallint AS gained
        FROM new_rows n
        JOIN old_rows o ON o.id = n.id
    ), changes AS MATERIALIZED (
        SELECT (SELECT j.app_id FROM jobs j WHERE j.id = p.job_id) AS app_id, p.*
        FROM pairs p
        WHERE p.reported OR p.gained <> 0
    ), activity AS (
        INSERT INTO recipient_activity (app_id, recipient_id, job_id, email, message_id, status)
        SELECT app_id, id, job_id, email, message_id, status
        FROM changes
        WHERE reported
        ORDER BY id
    )
    INSERT INTO job_counts AS c (app_id, day, kind, shard, count)
    SELECT ch.app_id, (now() AT TIME ZONE 'UTC')::date, m.kind, pg_backend_pid() % 16, count(*)
    FROM changes ch
    CROSS JOIN LATERAL unnest(mailer_milestone_kinds(ch.gained)) AS m(kind)
    WHERE ch.gained <> 0
    GROUP BY ch.app_id, m.kind
    ORDER BY ch.app_id, m.kind
    ON CONFLICT ON CONSTRAINT job_counts_pkey DO UPDATE SET count = c.count + excluded.count;
    RETURN NULL;
END;
$$;

-- A recipient stored with a status other than pending (0039's row trigger and its WHEN clause, unchanged): every
-- milestone it has.
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
    CROSS JOIN LATERAL unnest(mailer_milestone_kinds(NEW.milestones | mailer_status_milestone_bits(NEW.status)))
        AS m(kind)
    ORDER BY m.kind
    ON CONFLICT ON CONSTRAINT job_counts_pkey DO UPDATE SET count = c.count + excluded.count;
    RETURN NULL;
END;
$$;

-- What exists already: every recipient's milestones, on the UTC day of its last change (updated_at; the days of
-- earlier milestones are not kept anywhere cheap to read). One pass over recipients, in this transaction.
INSERT INTO job_counts AS c (app_id, day, kind, shard, count)
SELECT j.app_id, (r.updated_at AT TIME ZONE 'UTC')::date, m.kind, 0, count(*)
FROM recipients r
JOIN jobs j ON j.id = r.job_id
CROSS JOIN LATERAL unnest(mailer_milestone_kinds(r.milestones | mailer_status_milestone_bits(r.status))) AS m(kind)
WHERE r.status IN ('delivered', 'opened', 'clicked', 'unsubscribed', 'spam', 'bounced', 'blocked') OR r.milestones <> 0
GROUP BY 1, 2, 3
ON CONFLICT ON CONSTRAINT job_counts_pkey DO UPDATE SET count = c.count + excluded.count;
