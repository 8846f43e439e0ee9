-- count_waiting_jobs --
-- The jobs not final yet, by status and priority, for GET /metrics: how many, how many are due now,
-- and for how long the oldest due one has been due. Read at every scrape, so it only touches waiting
-- jobs, through the partial indexes jobs_due_idx and jobs_sending_idx.
SELECT status, priority, count(*) AS jobs,
       count(*) FILTER (WHERE run_at <= now()) AS due,
       COALESCE(EXTRACT(EPOCH FROM now() - min(run_at) FILTER (WHERE run_at <= now())), 0)::float8 AS oldest_due_s
FROM jobs
WHERE status IN ('queued', 'scheduled')
GROUP BY status, priority
UNION ALL
SELECT status, priority, count(*) AS jobs, 0 AS due, 0::float8 AS oldest_due_s
FROM jobs
WHERE status = 'sending'
GROUP BY status, priority;

-- count_pending_webhook_deliveries --
-- The outbound webhook backlog for GET /metrics: deliveries still to be made (webhook_deliveries_due_idx).
SELECT count(*) AS pending
FROM webhook_deliveries
WHERE status = 'pending';

-- limit_metrics_statement_time --
-- A scrape must answer fast even when the database is slow: its queries give up after this long.
SELECT set_config('statement_timeout', %(timeout_ms)s::text, true) AS statement_timeout;

-- oldest_transaction --
-- For GET /metrics: how long the oldest transaction open on this database has been (an analyst's REPEATABLE
-- READ, a backup, a session idle in transaction), and how many transactions old the oldest snapshot is: what
-- it holds back, vacuum cannot remove (store/jobs.py, ClaimFloors). Not the scrape's own. pg_stat_activity is
-- read from shared memory, one row per session, whatever the tables hold. Other roles' sessions show only to a
-- role with pg_read_all_stats (README, "Long transactions and snapshots").
-- oldest_writer_s is how long the oldest transaction holding a transaction id, in any database of the server
-- (xids are the server's) or prepared, has been open: GET /activity shows no change committed after it began
-- until it ends (migration 0039), so it bounds the feed's lag.
SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0)::float8 AS oldest_transaction_s,
       coalesce(max(age(backend_xmin)), 0)::bigint AS oldest_snapshot_xids,
       (SELECT coalesce(extract(epoch FROM now() - min(started)), 0)::float8
        FROM (SELECT w.xact_start FROM pg_stat_activity AS w
              WHERE w.backend_xid IS NOT NULL AND w.pid <> pg_backend_pid()
              UNION ALL SELECT p.prepared FROM pg_prepared_xacts AS p) AS writers (started)) AS oldest_writer_s
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL;
