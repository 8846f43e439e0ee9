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
