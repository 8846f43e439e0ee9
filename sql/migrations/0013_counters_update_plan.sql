-- The final-status counters (0011) planned once per session instead of on every update of jobs (every
-- recorded send batch). 0010 kept EXECUTE here because the statement joins the two transition tables,
-- and a plan cached after a one-row update (a nested loop) would be quadratic on a big one. With nested
-- loops off for this function the cached plan joins them by hash (or merge), linear at any size.
CREATE OR REPLACE FUNCTION job_counts_add_updated() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = off AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM new_jobs WHERE status IN ('sent', 'failed', 'suppressed', 'cancelled')) THEN
        RETURN NULL;
    END IF;
    -- A status change counts on the UTC day of its transaction: now(), which is also the updated_at
    -- that every job query sets. Only arrivals in a final status count; an update that keeps the
    -- status, or moves to queued, scheduled or sending, counts nothing.
    INSERT INTO job_counts AS c (app_id, day, kind, shard, count)
    SELECT n.app_id, (now() AT TIME ZONE 'UTC')::date, n.status, pg_backend_pid() % 16, count(*)
    FROM new_jobs AS n
    JOIN old_jobs AS o ON o.id = n.id
    WHERE n.status IS DISTINCT FROM o.status
      AND n.status IN ('sent', 'failed', 'suppressed', 'cancelled')
    GROUP BY n.app_id, n.status
    ORDER BY n.app_id, n.status
    ON CONFLICT ON CONSTRAINT job_counts_pkey DO UPDATE SET count = c.count + excluded.count;
    RETURN NULL;
END;
$$;
