-- mailer_wake_senders (0015) returns before its defer statement when that statement could defer nothing:
-- every email is due now, each lane has a wake-up waiting, and there are at most batch_size emails in
-- all, so each lane has one batch, which its waiting wake-up takes. That is every single-message
-- POST /queue while the senders keep up; the statement (a window over the lanes, an aggregate) cost about
-- 0.025 ms of PostgreSQL's work on each (BENCHMARKS.md, change 31). Otherwise it runs as before.
CREATE OR REPLACE FUNCTION mailer_wake_senders(
    lanes integer[], wake_ats timestamptz[], batch_size integer, queue text, task text,
    count_on_waiting boolean DEFAULT false
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    waiting integer[] := '{}';
    deferred bigint[];
BEGIN
    IF count_on_waiting AND array_position(wake_ats, NULL) IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock_shared(7243105912);
        SELECT coalesce(array_agg(lane), '{}') INTO waiting
        FROM (SELECT DISTINCT lane FROM unnest(lanes) AS due (lane)) AS due
        WHERE EXISTS (
            SELECT FROM procrastinate_jobs AS p
            WHERE p.status = 'todo' AND p.priority = due.lane AND p.queue_name = queue AND p.task_name = task
              AND p.scheduled_at IS NULL
        );
        IF cardinality(lanes) <= batch_size AND lanes <@ waiting AND cardinality(array_remove(wake_ats, NULL)) = 0
        THEN
            RETURN 0;  -- every lane has at most one batch, and a waiting wake-up takes it
        END IF;
    END IF;
    SELECT procrastinate_defer_jobs_v1(array_agg(
               ROW(queue, task, lane, NULL, NULL, '{}'::jsonb, wake_at)::procrastinate_job_to_defer_v1
           ))
    INTO deferred
    FROM (
        SELECT lane, wake_at, row_number() OVER (PARTITION BY lane, wake_at) AS n
        FROM unnest(lanes, wake_ats) AS due (lane, wake_at)
    ) AS numbered
    WHERE (n - 1) % batch_size = 0
      AND NOT (n = 1 AND wake_at IS NULL AND lane = ANY (waiting))  -- the waiting one takes this batch
    HAVING count(*) > 0;  -- nothing to defer: no call at all
    RETURN coalesce(cardinality(deferred), 0);
END;
$$;
