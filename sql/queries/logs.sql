-- force_custom_plans --
-- Plan this transaction's statements for their actual parameters: the log queries switch filters
-- off with "param IS NULL OR ...", which only folds away (and lets each filter use its index) in a custom plan.
SELECT set_config('plan_cache_mode', 'force_custom_plan', true) AS plan_cache_mode;

-- list_logs --
-- One page of an app's jobs, newest first, strictly after the cursor (created_at, id); every filter
-- optional. Served by jobs_app_created_idx, jobs_app_status_created_idx or jobs_metadata_idx.
SELECT id, status, priority, created_at, updated_at, send_at, attempts, last_error, metadata
FROM jobs
WHERE app_id = %(app_id)s
  AND (%(before_created_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(before_created_at)s::timestamptz, %(before_id)s::uuid))
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  -- the second condition repeats jobs_metadata_idx's predicate so that the index qualifies
  AND (%(metadata)s::jsonb IS NULL OR (metadata @> %(metadata)s::jsonb AND metadata <> '{}'::jsonb))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- list_logs_for_recipient --
-- As list_logs, for the jobs with this address (case-insensitive) among their recipients: the app's jobs
-- to that address newest first off recipient_addresses_pkey, each job then by primary key (OFFSET 0 keeps
-- it a per-row lookup) until the page is full.
SELECT j.id, j.status, j.priority, j.created_at, j.updated_at, j.send_at, j.attempts, j.last_error, j.metadata
FROM recipient_addresses AS a
CROSS JOIN LATERAL (
    SELECT id, status, priority, created_at, updated_at, send_at, attempts, last_error, metadata
    FROM jobs
    WHERE id = a.job_id
      AND app_id = %(app_id)s
      AND (%(status)s::text IS NULL OR status = %(status)s::text)
      AND (%(metadata)s::jsonb IS NULL OR metadata @> %(metadata)s::jsonb)
    OFFSET 0
) AS j
WHERE a.app_id = %(app_id)s
  AND a.email = lower(%(recipient)s::text)
  AND (%(before_created_at)s::timestamptz IS NULL
       OR (a.created_at, a.job_id) < (%(before_created_at)s::timestamptz, %(before_id)s::uuid))
  AND (%(since)s::timestamptz IS NULL OR a.created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR a.created_at < %(until)s::timestamptz)
ORDER BY a.created_at DESC, a.job_id DESC
LIMIT %(limit)s;

-- list_recipients_of_jobs --
-- The recipients of a page of jobs, in one query, in the order they were given.
SELECT job_id, email, kind, status
FROM recipients
WHERE job_id = ANY(%(job_ids)s::uuid[])
ORDER BY job_id, CASE kind WHEN 'to' THEN 0 WHEN 'cc' THEN 1 ELSE 2 END, position;

-- get_today_counts --
-- The app's counters for the current UTC day (a primary-key lookup on job_counts, never a scan of jobs).
SELECT kind, sum(count)::bigint AS count
FROM job_counts
WHERE app_id = %(app_id)s AND day = (now() AT TIME ZONE 'UTC')::date
GROUP BY kind;

-- list_daily_counts --
-- The app's counters for a range of UTC days (both ends included), oldest first.
SELECT day, kind, sum(count)::bigint AS count
FROM job_counts
WHERE app_id = %(app_id)s AND day BETWEEN %(since)s::date AND %(until)s::date
GROUP BY day, kind
ORDER BY day, kind;

-- list_overview_counts --
-- The operator's overview, summed here to what the page shows (one read of job_counts_day_idx, however many apps;
-- about 2,600 rows at 200 apps over 14 days, not 20,000 sorted for Python to group): per app and kind, the
-- range's total and the last day's (`across_apps` false); per day and kind, the sum over every app but those
-- `left_out` (test apps; `across_apps` true, app_id null). No ORDER BY: the caller files each row by its keys.
SELECT c.app_id, c.day, c.kind, GROUPING(c.app_id) = 1 AS across_apps,
       sum(c.count)::bigint AS count,
       coalesce(sum(c.count) FILTER (WHERE c.day = %(until)s::date), 0)::bigint AS last_day,
       coalesce(sum(c.count) FILTER (WHERE c.app_id <> ALL (%(left_out)s::bigint[])), 0)::bigint AS kept
FROM job_counts c
WHERE c.day BETWEEN %(since)s::date AND %(until)s::date
GROUP BY GROUPING SETS ((c.app_id, c.kind), (c.day, c.kind));
