-- The `created` counters (0004) without EXECUTE: their statement reads the inserted rows alone, with no
-- join, so a cached plan suits a 1-row and a million-row insert alike (a scan and an aggregate), and
-- planning it again for every POST /queue cost about a tenth of PostgreSQL's time on that request.
-- The update trigger keeps EXECUTE: it joins two transition tables, where a plan cached for a few rows
-- (a nested loop) would be quadratic on a big update.
CREATE OR REPLACE FUNCTION job_counts_add_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts AS c (app_id, day, kind, shard, count)
    SELECT app_id, day, kind, pg_backend_pid() % 16, count(*)
    FROM (
        -- created: on the UTC day of created_at
        SELECT app_id, (created_at AT TIME ZONE 'UTC')::date AS day, 'created' AS kind
        FROM inserted_jobs
        UNION ALL
        -- a job can be born final (every recipient suppressed): that counts today, like any change
        SELECT app_id, (now() AT TIME ZONE 'UTC')::date, status
        FROM inserted_jobs
        WHERE status IN ('sent', 'failed', 'suppressed', 'cancelled')
    ) AS arrivals
    GROUP BY app_id, day, kind
    ORDER BY app_id, day, kind
    ON CONFLICT ON CONSTRAINT job_counts_pkey DO UPDATE SET count = c.count + excluded.count;
    RETURN NULL;
END;
$$;
