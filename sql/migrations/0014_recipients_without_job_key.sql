-- recipients and jobs without the two per-row foreign-key checks of accepting a message (BENCHMARKS.md,
-- fifth round). pg_stat_statements over a batch ingest showed, per email, one `SELECT ... FROM jobs ...
-- FOR KEY SHARE` for its recipient and one of apps for its job, each a query of its own run by a trigger:
-- bench/pg_cost.py's queue column went from 59-70 to 42-57 µs of PostgreSQL CPU per email without them.
--
-- recipients.job_id: insert_jobs (sql/queries/jobs.sql) is mailer's only statement that inserts recipients
-- (bulk loaders in bench/ and tests write some for jobs they made), in the statement that inserts their
-- jobs, from the one list services/queueing.py builds for both; so the job exists before anything can read
-- the recipient. Retention, which relied on ON DELETE CASCADE, deletes the recipients of the jobs it
-- deletes itself (sql/queries/retention.sql, delete_jobs); the recipients' own cascades (mailjet_events,
-- webhook_messages) still run.
ALTER TABLE recipients DROP CONSTRAINT recipients_job_id_fkey;

-- jobs.app_id: apps are never deleted (revoking keeps the row), and a job's app is the one whose key was
-- checked for the request, or its schedule's (schedules.app_id keeps its foreign key).
ALTER TABLE jobs DROP CONSTRAINT jobs_app_id_fkey;
