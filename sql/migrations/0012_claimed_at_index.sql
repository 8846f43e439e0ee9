-- The jobs being sent, indexed by when they were claimed, with a predicate that no send-path statement
-- implies. Every statement that records a batch's outcome (mark_jobs_sent, mark_jobs_failed, requeue_jobs,
-- mark_jobs_suppressed) says `id = ANY(...) AND status = 'sending'`; that condition implied the predicate of
-- jobs_sending_idx (status = 'sending'), so the planner read that index whole and the table row of every
-- job in flight (and of each dead entry not yet vacuumed) to find the batch's 50: EXPLAIN with 16 batches
-- in flight showed `Rows Removed by Filter: 650`, a cost that grew with the number of senders. This
-- predicate is implied by none of them. (jobs_app_status_created_idx, which has status too, could still
-- tempt the planner; mark_jobs_sent says why the statements compare `status || ''`.)
--
-- claimed_at is set by the claim and cleared by every statement that takes a job out of `sending`
-- (sql/queries/jobs.sql, recovery.sql, suppressions.sql), so this index holds the same rows as the old
-- one. Its readers: stalled-claim recovery (`claimed_at < ...`, which implies the predicate) and
-- GET /metrics (which says `claimed_at IS NOT NULL`).
CREATE INDEX jobs_claimed_idx ON jobs (claimed_at) WHERE claimed_at IS NOT NULL;
DROP INDEX jobs_sending_idx;
