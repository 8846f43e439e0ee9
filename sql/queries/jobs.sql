-- insert_jobs --
-- Accept messages: jobs, their recipients, their addresses for /logs?recipient=, the first audit event and
-- the senders' wake-ups, in one statement. A send_at in the future makes the job scheduled (woken at
-- run_at); in the past (or none) it is queued now; with count_on_waiting (POST /queue) it may count on a
-- wake-up already waiting (sql/migrations/0015). With a key_id (POST /queue's key recalled without a
-- lookup, api/auth.py) nothing is inserted unless it is still the app's active key; with from_domains (the
-- messages' from domains, POST /queue) nothing unless the app may send from all of them (0019).
WITH caller AS MATERIALIZED (
    SELECT (%(key_id)s::text IS NULL AND %(from_domains)s::text[] IS NULL) OR EXISTS (
        SELECT FROM apps
        WHERE id = %(app_id)s
          AND (%(key_id)s::text IS NULL OR (key_id = %(key_id)s AND revoked_at IS NULL))
          AND (%(from_domains)s::text[] IS NULL OR from_domains IS NULL OR %(from_domains)s::text[] <@ from_domains)
    ) AS allowed
), incoming_recipients AS MATERIALIZED (
    SELECT r.job_id, r.kind, r.position, r.email, r.name
    FROM jsonb_to_recordset(%(recipients)s)
        AS r(job_id uuid, kind text, position integer, email text, name text)
    WHERE (SELECT allowed FROM caller)
), new_jobs AS (
    INSERT INTO jobs (id, app_id, status, priority, message, message_bytes, metadata, send_at, run_at, schedule_id,
                      request_id, template_id, template_version)
    SELECT j.id, %(app_id)s,
           CASE WHEN j.send_at > now() THEN 'scheduled' ELSE 'queued' END,
           j.priority, j.message, octet_length(j.message::text), coalesce(j.metadata, '{}'::jsonb), j.send_at,
           greatest(coalesce(j.send_at, now()), now()), j.schedule_id, j.request_id, j.template_id, j.template_version
    FROM jsonb_to_recordset(%(jobs)s)
        AS j(id uuid, priority text, message jsonb, metadata jsonb, send_at timestamptz, schedule_id uuid,
             request_id text, template_id uuid, template_version integer)
    WHERE (SELECT allowed FROM caller)
    RETURNING id, app_id, status, run_at, priority, created_at
), new_recipients AS (
    INSERT INTO recipients (job_id, kind, position, email, name)
    SELECT job_id, kind, position, email, name FROM incoming_recipients
), new_addresses AS (
    -- Joined to the statement's own new jobs, never to the jobs table (0012).
    INSERT INTO recipient_addresses (app_id, email, created_at, job_id)
    SELECT DISTINCT j.app_id, lower(r.email), j.created_at, j.id
    FROM incoming_recipients AS r
    JOIN new_jobs AS j ON j.id = r.job_id
), new_events AS (
    INSERT INTO job_events (job_id, type)
    SELECT id, status FROM new_jobs
), wakeups AS (
    SELECT mailer_wake_senders(
        array_agg(CASE priority WHEN 'bulk' THEN %(bulk_lane)s ELSE %(transactional_lane)s END),
        array_agg(CASE WHEN status = 'scheduled' THEN run_at END),
        %(batch_size)s, %(queue)s, %(task)s, %(count_on_waiting)s
    ) AS deferred
    FROM new_jobs
)
-- (joined: a SELECT in WITH runs only when the statement reads it; it has one row)
SELECT id, status, run_at FROM new_jobs CROSS JOIN wakeups;

-- get_job --
-- One job of one app, and whether that is a test app (test mode).
SELECT id, app_id, status, priority, message, metadata, send_at, run_at, attempts,
       last_error, schedule_id, request_id, template_id, template_version, created_at, updated_at,
       (SELECT apps.test FROM apps WHERE apps.id = jobs.app_id) AS test
FROM jobs
WHERE id = %(id)s AND app_id = %(app_id)s;

-- list_recipients --
-- A job's recipients in the order they were given.
SELECT id, kind, position, email, name, status, message_id, message_uuid, updated_at
FROM recipients
WHERE job_id = %(job_id)s
ORDER BY CASE kind WHEN 'to' THEN 0 WHEN 'cc' THEN 1 ELSE 2 END, position;

-- list_job_events --
-- A job's audit trail, oldest first.
SELECT type, at, detail
FROM job_events
WHERE job_id = %(job_id)s
ORDER BY id;

-- claim_due_jobs --
-- Take due jobs for sending, transactional before bulk, without waiting for rows another sender holds: up to
-- `limit` of them, and only as many as fit in `max_bytes` of message (always at least one, however big), so
-- a call never carries much more than `max_bytes` and a too-big job goes alone. A due job of a revoked app is
-- cancelled here instead (audit `app_revoked`, returned with `cancelled`): `mailer apps revoke` cancels them
-- too, but one committed as the app was revoked would otherwise be sent, and left queued it would be walked
-- past by every claim. Not one whose earlier attempt may have reached Mailjet (verify_before_send): it is
-- claimed (with `revoked`) so that the sender asks Mailjet, and ends sent if it was, cancelled if not.
-- `more` (on every row) says whether the claim stopped at a limit, so more may be due:
-- the jobs seen reached `limit`, or some fitted no more (the running total passes `max_bytes` once two jobs
-- are in it). `running = bytes`: nothing to send before it, so the first job goes even when it alone is too
-- big. The claim commits before Mailjet is called, so a crash leaves a trace; `claimed_by` names the sender
-- (mailer/services/liveness.py) whose liveness the claim now depends on. `test`: a test app's job, which the
-- sender answers itself instead of calling Mailjet (test mode; one primary-key lookup of apps per claimed job).
-- Each lane is read from its floor (`*_at`, `*_id`; null: from the start), not from the oldest entry of
-- jobs_due_idx: the entries of claimed jobs stay in it until vacuum removes them, and while a long snapshot
-- (an analyst's REPEATABLE READ, a backup) pins them, nothing can, nor can a scan mark them dead, so a claim
-- from the start would visit every job claimed since that snapshot began (store/jobs.py, ClaimFloors). The
-- bulk lane is read only for what the transactional lane left of `limit` (LIMIT 0 reads nothing). Every row
-- has its run_at (`due_at`), and per lane the first job the claim locked but left (too big for this call,
-- `*_left_at`, `*_left_id`), for the next claim to start from.
WITH transactional AS MATERIALIZED (
    SELECT id, false AS bulk, run_at, coalesce(message_bytes, octet_length(message::text)) AS bytes,
           EXISTS (SELECT FROM apps WHERE apps.id = jobs.app_id AND apps.revoked_at IS NOT NULL) AS revoked,
           verify_before_send
    FROM jobs
    WHERE status IN ('queued', 'scheduled') AND (priority = 'bulk') IS FALSE
      AND (run_at, id) >= (coalesce(%(transactional_at)s::timestamptz, '-infinity'), %(transactional_id)s::uuid)
      AND run_at <= now()
    ORDER BY run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), bulk AS MATERIALIZED (
    SELECT id, true AS bulk, run_at, coalesce(message_bytes, octet_length(message::text)) AS bytes,
           EXISTS (SELECT FROM apps WHERE apps.id = jobs.app_id AND apps.revoked_at IS NOT NULL) AS revoked,
           verify_before_send
    FROM jobs
    WHERE status IN ('queued', 'scheduled') AND (priority = 'bulk')
      AND (run_at, id) >= (coalesce(%(bulk_at)s::timestamptz, '-infinity'), %(bulk_id)s::uuid)
      AND run_at <= now()
    ORDER BY run_at, id
    LIMIT greatest(%(limit)s - (SELECT count(*) FROM transactional), 0)
    FOR UPDATE SKIP LOCKED
), picked AS MATERIALIZED (
    SELECT id, bulk, run_at, revoked, cancel, bytes, more,
           cancel OR running <= %(max_bytes)s OR running = bytes AS taken
    FROM (
        SELECT id, bulk, run_at, revoked, cancel, bytes,
               sum(bytes) FILTER (WHERE NOT cancel) OVER (ORDER BY bulk, run_at, id ROWS UNBOUNDED PRECEDING)
                   AS running,
               count(*) OVER () >= %(limit)s OR (count(*) FILTER (WHERE NOT cancel) OVER () > 1
                                                 AND sum(bytes) FILTER (WHERE NOT cancel) OVER () > %(max_bytes)s)
                   AS more
        FROM (SELECT *, revoked AND NOT verify_before_send AS cancel
              FROM (SELECT * FROM transactional UNION ALL SELECT * FROM bulk) AS due) AS d
    ) AS p
), floors AS (
    SELECT (SELECT run_at FROM picked WHERE NOT bulk AND NOT taken ORDER BY run_at, id LIMIT 1)
               AS transactional_left_at,
           (SELECT id FROM picked WHERE NOT bulk AND NOT taken ORDER BY run_at, id LIMIT 1) AS transactional_left_id,
           (SELECT run_at FROM picked WHERE bulk AND NOT taken ORDER BY run_at, id LIMIT 1) AS bulk_left_at,
           (SELECT id FROM picked WHERE bulk AND NOT taken ORDER BY run_at, id LIMIT 1) AS bulk_left_id
), changed AS (
    UPDATE jobs
    SET status = CASE WHEN picked.cancel THEN 'cancelled' ELSE 'sending' END,
        attempts = jobs.attempts + CASE WHEN picked.cancel THEN 0 ELSE 1 END,
        claimed_at = CASE WHEN picked.cancel THEN NULL ELSE now() END,
        claimed_by = CASE WHEN picked.cancel THEN jobs.claimed_by ELSE %(sender_id)s::int END,
        updated_at = now()
    FROM picked
    WHERE jobs.id = picked.id AND jobs.status IN ('queued', 'scheduled') AND picked.taken
    RETURNING jobs.id, jobs.app_id, jobs.priority, CASE WHEN picked.cancel THEN NULL ELSE jobs.message END AS message,
              jobs.attempts, jobs.verify_before_send, jobs.request_id, picked.bytes AS message_bytes, picked.revoked,
              extract(epoch FROM now() - jobs.lost_attempt_at)::float8 AS lost_attempt_age_s,
              picked.cancel AS cancelled, picked.more, picked.run_at AS due_at,
              (SELECT apps.test FROM apps WHERE apps.id = jobs.app_id) AS test
), audit AS (
    INSERT INTO job_events (job_id, type, detail)
    SELECT id, CASE WHEN cancelled THEN 'app_revoked' ELSE 'sending' END,
           CASE WHEN cancelled THEN '{"by": "sender", "status": "cancelled"}'::jsonb
                ELSE jsonb_build_object('attempt', attempts) END
    FROM changed
)
SELECT id, app_id, priority, message, attempts, verify_before_send, request_id, message_bytes, revoked,
       lost_attempt_age_s, cancelled, more, due_at, transactional_left_at, transactional_left_id, bulk_left_at,
       bulk_left_id, test
FROM changed CROSS JOIN floors;

-- mark_jobs_sent --
-- Mailjet accepted these jobs. The status is compared as `status || ''`, which no index has: the statistics
-- of a busy queue are older than its jobs in flight (ANALYZE saw none `sending`), so an index on status
-- looks like one row to the planner, which would read it, and every job in flight, instead of 50 keys
-- (tests/integration/test_send_plans.py). The same in mark_jobs_suppressed. `status IN` the live statuses keeps
-- every statement about claimed jobs to jobs_live (partition pruning, 0028); the job moves to jobs_done.
WITH sent AS (
    UPDATE jobs
    SET status = 'sent', last_error = NULL, verify_before_send = false, claimed_at = NULL, lost_attempt_at = NULL,
        updated_at = now()
    WHERE id = ANY(%(ids)s) AND status IN ('scheduled', 'queued', 'sending') AND status || '' = 'sending'
    RETURNING id
)
INSERT INTO job_events (job_id, type)
SELECT id, 'sent' FROM sent
RETURNING job_id;

-- set_recipient_message_ids --
-- Store the per-recipient MessageIDs Mailjet gave; `sent` unless events already moved it further.
-- `job_ids` (the jobs of these rows) lets the planner reach them by index: joined to the recordset alone
-- (estimated at 100 rows) it hashes a sequential scan of the whole recipients table.
UPDATE recipients AS r
SET message_id = x.message_id,
    message_uuid = x.message_uuid,
    status = CASE
        WHEN (SELECT rank FROM recipient_statuses WHERE status = r.status)
             < (SELECT rank FROM recipient_statuses WHERE status = 'sent')
        THEN 'sent' ELSE r.status END,
    updated_at = now()
FROM jsonb_to_recordset(%(recipients)s)
    AS x(job_id uuid, kind text, position integer, message_id bigint, message_uuid text)
WHERE r.job_id = ANY(%(job_ids)s::uuid[]) AND r.job_id = x.job_id AND r.kind = x.kind AND r.position = x.position;

-- mark_jobs_failed --
-- Mailjet rejected these jobs (or retries ran out): the job and its pending recipients fail.
WITH failed AS (
    UPDATE jobs
    SET status = 'failed', last_error = x.error, claimed_at = NULL, lost_attempt_at = NULL, updated_at = now()
    FROM jsonb_to_recordset(%(failures)s) AS x(id uuid, error text)
    WHERE jobs.id = x.id AND jobs.status = 'sending'
    RETURNING jobs.id, x.error
), failed_recipients AS (
    UPDATE recipients
    SET status = 'failed', updated_at = now()
    FROM failed
    WHERE recipients.job_id = failed.id AND recipients.status = 'pending'
)
INSERT INTO job_events (job_id, type, detail)
SELECT id, 'failed', jsonb_build_object('error', error) FROM failed
RETURNING job_id;

-- requeue_jobs --
-- A transient failure: try again after each job's backoff.
WITH requeued AS (
    UPDATE jobs
    SET status = 'queued', last_error = x.error, run_at = now() + make_interval(secs => x.delay_s),
        verify_before_send = jobs.verify_before_send OR x.ambiguous,
        lost_attempt_at = CASE WHEN x.ambiguous THEN jobs.claimed_at ELSE jobs.lost_attempt_at END, claimed_at = NULL,
        updated_at = now()
    FROM jsonb_to_recordset(%(retries)s)
        AS x(id uuid, error text, delay_s double precision, ambiguous boolean)
    WHERE jobs.id = x.id AND jobs.status = 'sending'
    RETURNING jobs.id, jobs.run_at, x.error
)
INSERT INTO job_events (job_id, type, detail)
SELECT id, 'retry_scheduled', jsonb_build_object('error', error, 'run_at', run_at) FROM requeued
RETURNING job_id, (detail->>'run_at')::timestamptz AS run_at;

-- release_jobs --
-- Claimed jobs the sender never tried (the claim's time ran out, services/sending.py): back in the queue, due
-- now, as if never claimed: the attempt is not counted, and verify_before_send stays as it was (nothing was
-- sent this time).
WITH released AS (
    UPDATE jobs
    SET status = 'queued', run_at = now(), attempts = greatest(jobs.attempts - 1, 0), claimed_at = NULL,
        updated_at = now()
    WHERE id = ANY(%(ids)s) AND status IN ('scheduled', 'queued', 'sending') AND status || '' = 'sending'
    RETURNING id, run_at
)
INSERT INTO job_events (job_id, type, detail)
SELECT id, 'released', jsonb_build_object('reason', 'not tried before the claim''s deadline', 'run_at', run_at)
FROM released
RETURNING job_id, (detail->>'run_at')::timestamptz AS run_at;

-- recheck_jobs --
-- Claimed jobs whose earlier attempt the lookup did not find while it was younger than Mailjet's listing delay
-- (MAILER_SEND_LISTING_DELAY_S): Mailjet may have accepted it and not list it yet. Back in the queue uncounted,
-- still to be checked first, due once the delay after the lost attempt has passed (in the database's clock).
WITH rechecked AS (
    UPDATE jobs
    SET status = 'queued', attempts = greatest(jobs.attempts - 1, 0), claimed_at = NULL,
        run_at = greatest(now(), jobs.lost_attempt_at + make_interval(secs => %(delay_s)s)), updated_at = now()
    WHERE id = ANY(%(ids)s) AND status IN ('scheduled', 'queued', 'sending') AND status || '' = 'sending'
    RETURNING id, run_at
)
INSERT INTO job_events (job_id, type, detail)
SELECT id, 'recheck', jsonb_build_object(
    'reason', 'the earlier attempt is not listed by Mailjet yet: look it up again after the listing delay',
    'run_at', run_at)
FROM rechecked
RETURNING job_id, (detail->>'run_at')::timestamptz AS run_at;

-- cancel_revoked_jobs --
-- Claimed jobs of a revoked app whose earlier attempt Mailjet does not know: cancelled, never sent.
WITH cancelled AS (
    UPDATE jobs
    SET status = 'cancelled', claimed_at = NULL, lost_attempt_at = NULL, updated_at = now()
    WHERE id = ANY(%(ids)s) AND status IN ('scheduled', 'queued', 'sending') AND status || '' = 'sending'
    RETURNING id
)
INSERT INTO job_events (job_id, type, detail)
SELECT id, 'app_revoked', '{"by": "sender", "status": "cancelled"}'::jsonb FROM cancelled
RETURNING job_id;

-- lock_idempotency_key --
-- Serialize requests that carry the same Idempotency-Key; false when another holds it now.
SELECT pg_try_advisory_xact_lock(hashtextextended(%(app_id)s::text || ':' || %(key)s, 0)) AS locked;

-- get_idempotency_key --
-- The stored outcome of an earlier request with this key within the last `days` (the months before are not
-- read). Run under lock_idempotency_key: with it, one row per key in the window (the table is partitioned by
-- created_at, migration 0029, so no unique index can say it across months).
SELECT request_hash, response_status, response_body
FROM idempotency_keys
WHERE app_id = %(app_id)s AND key = %(key)s AND created_at > now() - make_interval(days => %(days)s::integer)
ORDER BY created_at DESC
LIMIT 1;

-- insert_idempotency_key --
-- Remember a request's outcome under its key, in the transaction that created its jobs.
INSERT INTO idempotency_keys (app_id, key, request_hash, response_status, response_body)
VALUES (%(app_id)s, %(key)s, %(request_hash)s, %(response_status)s, %(response_body)s);
