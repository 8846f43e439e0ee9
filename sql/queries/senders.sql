-- register_sender --
-- A new sender for this worker process, locked by the connection that runs this (its liveness connection).
-- Nobody else can hold a lock on a key that did not exist before, so the lock is granted at once.
WITH sender AS (
    INSERT INTO senders (backend_pid, host, os_pid)
    VALUES (pg_backend_pid(), %(host)s, %(os_pid)s)
    RETURNING id
)
SELECT id, pg_advisory_lock(%(namespace)s::int, id) IS NOT NULL AS locked FROM sender;

-- try_lock_sender --
-- Take a known sender's lock again after the liveness connection was lost; false while another session holds it.
SELECT pg_try_advisory_lock(%(namespace)s::int, %(id)s::int) AS locked;

-- unlock_sender --
-- Give back a sender's lock that turned out not to be worth keeping (the sender was retired).
SELECT pg_advisory_unlock(%(namespace)s::int, %(id)s::int) AS unlocked;

-- stale_sender_backend --
-- The backend that still holds a sender's lock, if it is the one the sender itself recorded (its earlier
-- liveness connection, which the server has not yet noticed is gone) and the sender is not retired.
SELECT l.pid
FROM pg_locks AS l
JOIN senders AS s ON s.id = %(id)s AND s.retired_at IS NULL AND s.backend_pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid = (%(namespace)s::bigint)::oid AND l.objid = (%(id)s::bigint)::oid
  AND l.pid <> pg_backend_pid();

-- terminate_sender_backend --
-- End the given backend if it still holds a sender's lock (the stale or hung liveness connection found earlier;
-- never this one, nor whoever holds the lock by now: another worker's takeover holds it for its transaction).
-- Needs the same role or pg_signal_backend.
SELECT l.pid, pg_terminate_backend(l.pid) AS terminated
FROM pg_locks AS l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid = (%(namespace)s::bigint)::oid AND l.objid = (%(id)s::bigint)::oid
  AND l.pid = %(pid)s AND l.pid <> pg_backend_pid();

-- resume_sender --
-- Keep a sender whose lock this connection holds again, unless it was retired meanwhile.
UPDATE senders SET backend_pid = pg_backend_pid(), seen_at = now()
WHERE id = %(id)s AND retired_at IS NULL
RETURNING id;

-- renew_sender --
-- The liveness connection's heartbeat; no row when the sender was retired (its claims were taken over).
UPDATE senders SET seen_at = now()
WHERE id = %(id)s AND retired_at IS NULL
RETURNING id;

-- sender_active --
-- The heartbeat of a sender that stops renewing its lease (a claim of it hung): is it retired yet?
SELECT id FROM senders WHERE id = %(id)s AND retired_at IS NULL;

-- hold_sender --
-- At claim time, in the claim's transaction: the sender is not retired, and cannot be until the claim commits
-- (the takeover locks the row FOR UPDATE, which waits for this KEY SHARE lock; the heartbeat's UPDATE does not).
SELECT id FROM senders WHERE id = %(id)s AND retired_at IS NULL FOR KEY SHARE;

-- retire_lost_senders --
-- The takeover rules, on the senders table alone. DEAD: nobody holds the sender's lock (this transaction
-- takes it, so its worker cannot come back with it before this commits) and it has not been seen for the
-- reconnect grace, counted from the server's start at the earliest (a restart drops every lock; live workers
-- take theirs back within the grace; and no worker runs this before its own liveness connection has been up
-- for a whole grace: services/liveness.py TakeoverLoop). HUNG: the lock is held, but the sender has not been
-- seen for the lease. Judged first without row locks; only the senders to retire are then locked, SKIP LOCKED
-- (a row being renewed, or held by a claim in progress, is alive) and judged again on their latest version, so a
-- quiet live sender's heartbeat never waits on a takeover. Returns the senders retired now, and those retired
-- earlier (their claims may still need taking over).
WITH judged AS MATERIALIZED (
    SELECT id,
           CASE WHEN pg_try_advisory_xact_lock(%(namespace)s::int, id) THEN 'dead'
                WHEN seen_at < now() - make_interval(secs => %(lease_s)s) THEN 'hung' END AS rule
    FROM senders
    WHERE retired_at IS NULL
      AND greatest(seen_at, pg_postmaster_start_time()) < now() - make_interval(secs => %(grace_s)s)
), doomed AS MATERIALIZED (
    SELECT s.id, s.backend_pid, judged.rule
    FROM senders AS s JOIN judged ON judged.id = s.id
    WHERE judged.rule IS NOT NULL AND s.retired_at IS NULL
      AND greatest(s.seen_at, pg_postmaster_start_time()) < now() - make_interval(secs => %(grace_s)s)
      AND (judged.rule = 'dead' OR s.seen_at < now() - make_interval(secs => %(lease_s)s))
    ORDER BY s.id
    FOR UPDATE OF s SKIP LOCKED
), retired AS (
    UPDATE senders AS s SET retired_at = now(), retired_because = doomed.rule
    FROM doomed
    WHERE s.id = doomed.id
    RETURNING s.id, doomed.rule, doomed.backend_pid
)
SELECT id, rule, backend_pid, true AS now FROM retired
UNION ALL
SELECT id, retired_because, backend_pid, false FROM senders WHERE retired_at IS NOT NULL;

-- set_takeover_timeouts --
-- For the takeover's transaction only: a lock it cannot have within lock_ms (a fence or a claim at work) fails
-- this round, and the next round tries again, rather than holding sender and job rows while it waits; a
-- takeover worker paused mid-transaction loses its session after idle_ms, and its locks with it.
SELECT set_config('lock_timeout', %(lock_ms)s::text, true),
       set_config('statement_timeout', %(statement_ms)s::text, true),
       set_config('idle_in_transaction_session_timeout', %(idle_ms)s::text, true);

-- take_over_lost_claims --
-- The 'sending' jobs of retired senders: queued again, due now, to be checked with Mailjet by CustomID before
-- any resend (their sender may have reached Mailjet). Read through jobs_sending_idx: the jobs in flight.
-- The jobs are locked first, in id order as a claim's fence locks them (hold_claimed_jobs), so the two never
-- deadlock; a job the fence recorded meanwhile is no longer 'sending' when its lock comes, and is left alone.
WITH lost AS MATERIALIZED (
    SELECT id, retired_because FROM senders WHERE retired_at IS NOT NULL
), locked AS MATERIALIZED (
    SELECT jobs.id, lost.id AS sender_id, lost.retired_because
    FROM jobs JOIN lost ON jobs.claimed_by = lost.id
    WHERE jobs.status = 'sending'
    ORDER BY jobs.id
    FOR UPDATE OF jobs
), taken AS (
    UPDATE jobs
    SET status = 'queued', run_at = now(), verify_before_send = true, lost_attempt_at = jobs.claimed_at,
        claimed_at = NULL, updated_at = now()
    FROM locked
    WHERE jobs.id = locked.id AND jobs.status = 'sending' AND jobs.claimed_by = locked.sender_id
    RETURNING jobs.id, jobs.app_id, jobs.priority, jobs.request_id, locked.sender_id, locked.retired_because AS rule
), audit AS (
    INSERT INTO job_events (job_id, type, detail)
    SELECT id, 'recovered', jsonb_build_object(
        'reason', CASE rule
            WHEN 'hung' THEN 'the sending worker stopped renewing its lease (hung)'
            ELSE 'the sending worker''s database session is gone (dead)' END,
        'rule', rule, 'sender', sender_id)
    FROM taken
)
SELECT id, app_id, priority, request_id, sender_id, rule FROM taken;

-- delete_spent_senders --
-- Retired senders with no job left in their name.
DELETE FROM senders AS s
WHERE s.retired_at IS NOT NULL
  AND NOT EXISTS (SELECT FROM jobs WHERE jobs.status = 'sending' AND jobs.claimed_by = s.id)
RETURNING s.id;

-- hold_claimed_jobs --
-- The fence of a claim's results: lock, and return, the claimed jobs this claim still holds (still 'sending',
-- by this sender, at the attempt it claimed). Any other was taken over meanwhile: its result is late and
-- changes nothing. By primary key, `id = ANY`: claimed_by has no statistics worth the name (NULL in all but the
-- jobs in flight) and `status || ''` none at all (see mark_jobs_sent), and joined to the list of ids the planner
-- would scan the whole table (tests/integration/test_send_plans.py). In id order, so that two fences never
-- wait on each other.
SELECT j.id
FROM jobs AS j
WHERE j.id = ANY(%(ids)s::uuid[])
  AND j.status IN ('scheduled', 'queued', 'sending') AND j.status || '' = 'sending' AND j.claimed_by = %(sender_id)s
  AND j.attempts = (%(attempts)s::int[])[array_position(%(ids)s::uuid[], j.id)]
ORDER BY j.id
FOR UPDATE OF j;
