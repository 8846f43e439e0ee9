-- Engagement stats (issue 22): GET /stats adds per UTC day how many recipients were delivered, opened, clicked,
-- bounced, blocked, marked spam and unsubscribed, counted by the triggers that already see every recipient status
-- change (0039: the sender, POST /events through mailer_record_events, test mode, suppressions, unsubscribe).
--
-- Storage: the same counters as the jobs' (job_counts, 0004), with the recipient kinds beside the job kinds
-- (the two sets of names are disjoint). One table means one query per page for /stats and the dashboard, the
-- same primary-key reads, the same shards, and the same rule for retention (counters are history, never
-- deleted: services/retention.py). A twin table would have given the counters a clearer owner but two reads
-- per page and a second copy of every rule.

-- This file only widens job_counts' kinds and indexes it: a short transaction of its own (the ACCESS EXCLUSIVE
-- lock on job_counts stalls every job write and /logs only while the check is validated). The counting triggers
-- and the backfill are 0046's, which locks recipients first and needs only ROW EXCLUSIVE on job_counts, the
-- order the sender takes them in (jobs → job_counts, then recipients): no deadlock with a running sender.

ALTER TABLE job_counts
    DROP CONSTRAINT job_counts_kind_check,
    ADD CONSTRAINT job_counts_kind_check CHECK (kind IN (
        'created', 'sent', 'failed', 'suppressed', 'cancelled',
        'delivered', 'opened', 'clicked', 'bounced', 'blocked', 'spam', 'unsubscribed'));

-- The operator's overview reads every app's counters for 14 days: by day, not by app. `day` never changes
-- on an update, so the counters' increments stay HOT.
CREATE INDEX job_counts_day_idx ON job_counts (day);
