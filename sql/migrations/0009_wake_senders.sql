-- Wake the senders from SQL: one Procrastinate send job per `batch_size` due jobs of a lane and a wake-up
-- time (null: now), deferred with Procrastinate's own function in the caller's transaction, so the wake-ups
-- commit with the jobs they wake for. insert_jobs calls it in the very statement that stores the jobs
-- (no Python job objects, no round trip of its own); mailer/services/wakeups.py for everything else.
--
-- procrastinate_defer_jobs_v1 and its row type are those of the Procrastinate pinned in pyproject.toml;
-- PL/pgSQL resolves them when called, so this can be created before Procrastinate's schema is.
CREATE FUNCTION mailer_wake_senders(
    lanes integer[], wake_ats timestamptz[], batch_size integer, queue text, task text
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    deferred bigint[];
BEGIN
    SELECT procrastinate_defer_jobs_v1(array_agg(
               ROW(queue, task, lane, NULL, NULL, '{}'::jsonb, wake_at)::procrastinate_job_to_defer_v1
           ))
    INTO deferred
    FROM (
        SELECT lane, wake_at, row_number() OVER (PARTITION BY lane, wake_at) AS n
        FROM unnest(lanes, wake_ats) AS due (lane, wake_at)
    ) AS numbered
    WHERE (n - 1) % batch_size = 0;
    RETURN coalesce(cardinality(deferred), 0);
END;
$$;
