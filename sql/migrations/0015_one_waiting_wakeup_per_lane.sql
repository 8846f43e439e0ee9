-- One waiting wake-up per lane for the API's requests instead of one per request (BENCHMARKS.md, sixth
-- round). Deferring a Procrastinate job (its row, its event row, its NOTIFY) was a fifth of PostgreSQL's
-- work for a single-message POST /queue, and under load almost every such wake-up found a sender busy.
--
-- With count_on_waiting (insert_jobs for POST /queue), email due now defers no wake-up for its first batch
-- of a lane when one is waiting there (todo and not scheduled: one whose time has just come was announced
-- by no NOTIFY, and may wait for the workers' 1 s poll). Waiting is not enough on its own: a sender may
-- fetch that wake-up and claim before the request commits, and find nothing. So the two sides meet at one
-- advisory lock:
--   * mailer_wake_senders takes it shared, held to commit, *before* it looks for a waiting wake-up (each
--     statement of a PL/pgSQL function reads a fresh snapshot, so the look comes after the lock);
--   * a sender whose claim came back short calls mailer_await_wakers, which takes it exclusively in a
--     transaction of its own: that waits for every transaction holding it shared to end, and the sender
--     claims once more. Whoever saw its wake-up waiting took the lock before the sender fetched it, so
--     the wait covers them; whoever comes later sees the wake-up taken and defers one of its own.
-- One lock for every lane, so a transaction that wakes two lanes takes it once. Only POST /queue takes it,
-- in its one statement (or the short transaction that also stores an Idempotency-Key); the scheduler,
-- retries and the recovery sweep defer wake-ups of their own as before. A request takes no row lock that
-- another could wait for before it takes this one (its counter rows come at the end of its statement), so
-- no cycle can form through it. While a sender waits for it exclusively, new shared takers queue behind
-- it, so the sender waits at most 500 ms: should a holder itself be slow to end (waiting for a counter row
-- that a long scheduler transaction holds, say), the sender gives up rather than hold up every request.
-- It claims once more anyway; email it may have missed is woken by the recovery sweep once it has been
-- due for 10 s (services/recovery.py).
DROP FUNCTION mailer_wake_senders(integer[], timestamptz[], integer, text, text);
CREATE FUNCTION mailer_wake_senders(
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

-- A sender's barrier: returns once every transaction that may have counted on a wake-up now running has
-- ended. Run it alone, in a transaction of its own.
CREATE FUNCTION mailer_await_wakers() RETURNS void LANGUAGE sql SET lock_timeout = '500ms' AS $$
    SELECT pg_advisory_xact_lock(7243105912);
$$;
