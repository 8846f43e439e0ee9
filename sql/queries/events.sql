-- insert_mailjet_events --
-- Keep each Mailjet event once (duplicates by fingerprint are dropped) and match it to its
-- recipient by MessageID, or by CustomID (our job id) + email when the send result is not
-- stored yet. Unmatched events stay with applied_at null until the message becomes known.
-- A recipient matched by CustomID + email whose MessageID is not known (the lookup before a resend found its
-- message, but Mailjet did not list this recipient yet) takes the event's, so that its later events that carry
-- only a MessageID (opens, clicks) find it too. An address listed twice in one message: the copy without a
-- MessageID first (the one with a MessageID would have matched by it).
-- With a CustomID (our job id, which Mailjet sends back with every event of the message) the MessageID is
-- looked up in that job's month of recipients only (run-time partition pruning, 0028); without one, in every
-- month's recipients_message_id_idx.
-- A duplicate is found by the unique key (fingerprint, occurred_at): occurred_at is the event's own time, hashed
-- into the fingerprint, so every copy of a dated event has the same key in the same month partition (0029). An
-- undated event is stamped with its arrival, which differs between copies: it is looked up by fingerprint
-- among the events of the last 28 days (mailer/mailjet/events.py, PLAUSIBLE_PAST; two partitions at most).
-- MATERIALIZED: the match is computed once per event (inlined, it ran again for applied_at). `r.id + 0`:
-- ordered by the bare key, the planner may walk the primary key checking every row's MessageID.
WITH matched AS MATERIALIZED (
    SELECT e.fingerprint, e.name, e.status, e.occurred_at, e.message_id, e.custom_id, e.job_id, e.email,
           e.suppresses, e.payload, coalesce(e.dated, true) AS dated,
           coalesce(
               (SELECT r.id FROM recipients r
                WHERE e.message_id IS NOT NULL AND e.job_id IS NOT NULL AND r.job_id = e.job_id
                  AND r.message_id = e.message_id
                ORDER BY r.id + 0 LIMIT 1),
               (SELECT r.id FROM recipients r
                WHERE e.message_id IS NOT NULL AND e.job_id IS NULL AND r.message_id = e.message_id
                ORDER BY r.id + 0 LIMIT 1),
               (SELECT r.id FROM recipients r
                WHERE r.job_id = e.job_id AND lower(r.email) = lower(e.email)
                ORDER BY r.message_id IS NOT NULL, r.id + 0 LIMIT 1)
           ) AS recipient_id
    FROM jsonb_to_recordset(%(events)s)
        AS e(fingerprint text, name text, status text, occurred_at timestamptz, message_id bigint,
             custom_id text, job_id uuid, email text, suppresses boolean, payload jsonb, dated boolean)
), incoming AS MATERIALIZED (
    -- The matched recipient's job: the event's own job id when it has one (both matches above require it).
    SELECT m.*,
           CASE WHEN m.recipient_id IS NULL THEN NULL
                WHEN m.job_id IS NOT NULL THEN m.job_id
                ELSE (SELECT r.job_id FROM recipients r WHERE r.id = m.recipient_id AND r.message_id = m.message_id)
           END AS recipient_job_id
    FROM matched AS m
), named AS (
    -- The keys as arrays too: the months of these jobs only (run-time pruning; none when no event names one),
    -- reached by the primary key. Joined to `incoming` alone, a month partition without statistics yet is
    -- hashed whole for every batch.
    UPDATE recipients AS r
    SET message_id = i.message_id, updated_at = now()
    FROM incoming AS i
    WHERE r.job_id = i.recipient_job_id AND r.id = i.recipient_id AND r.message_id IS NULL
      AND i.message_id IS NOT NULL
      AND r.job_id = ANY(ARRAY(SELECT recipient_job_id FROM incoming
                               WHERE recipient_id IS NOT NULL AND message_id IS NOT NULL))
      AND r.id = ANY(ARRAY(SELECT recipient_id FROM incoming
                           WHERE recipient_id IS NOT NULL AND message_id IS NOT NULL))
), inserted AS (
    INSERT INTO mailjet_events (fingerprint, name, status, occurred_at, message_id, custom_id, email,
                                suppresses, payload, recipient_id, applied_at)
    SELECT fingerprint, name, status, occurred_at, message_id, custom_id, email, suppresses, payload,
           recipient_id, CASE WHEN recipient_id IS NOT NULL THEN now() END
    FROM incoming AS i
    -- LATERAL ... LIMIT 1, not NOT EXISTS: under the OR the planner may hash every event of the 28 days once
    -- per batch instead of probing the unique key per undated event.
    LEFT JOIN LATERAL (
        SELECT true AS seen FROM mailjet_events AS x
        WHERE NOT i.dated AND x.fingerprint = i.fingerprint AND x.occurred_at >= now() - interval '28 days'
        LIMIT 1
    ) AS d ON true
    WHERE d.seen IS NULL
    ON CONFLICT ON CONSTRAINT mailjet_events_fingerprint_key DO NOTHING
    RETURNING id, fingerprint, recipient_id, status, suppresses
)
SELECT x.id, x.recipient_id, x.status, x.suppresses, i.recipient_job_id
FROM inserted AS x
JOIN incoming AS i ON i.fingerprint = x.fingerprint;

-- apply_pending_events --
-- Match events that arrived before their message's send result was stored: the recipients of these jobs
-- (their months' partitions only, 0028).
UPDATE mailjet_events AS e
SET recipient_id = r.id, applied_at = now()
FROM recipients AS r
WHERE e.applied_at IS NULL
  AND e.message_id = ANY(%(message_ids)s)
  AND r.job_id = ANY(%(job_ids)s::uuid[])
  AND r.message_id = e.message_id
RETURNING e.id, e.recipient_id, r.job_id AS recipient_job_id;

-- advance_recipient_statuses --
-- Set each recipient to the highest-ranked status among its events, never to a lower one.
-- The rank of the current status is a subquery (not a join) so a concurrent update is
-- re-checked against the row's newest status. `r.id = ANY(...)` lets the planner reach the recipients by
-- their key: joined to `best` alone it hashes a sequential scan of the whole recipients table. `r.job_id =
-- ANY(...)`, the recipients' jobs, keeps that to their months' partitions (0028).
UPDATE recipients AS r
SET status = best.status, updated_at = now()
FROM (
    SELECT DISTINCT ON (e.recipient_id) e.recipient_id, e.status, s.rank
    FROM mailjet_events e
    JOIN recipient_statuses s ON s.status = e.status
    WHERE e.recipient_id = ANY(%(recipient_ids)s)
    ORDER BY e.recipient_id, s.rank DESC, e.occurred_at DESC
) AS best
WHERE r.id = best.recipient_id AND r.id = ANY(%(recipient_ids)s) AND r.job_id = ANY(%(job_ids)s::uuid[])
  AND best.rank > (SELECT rank FROM recipient_statuses WHERE status = r.status)
RETURNING r.id, r.job_id, r.email, r.status;

-- list_recipient_events --
-- The tracking timeline of every recipient of a job, oldest first.
SELECT e.recipient_id, e.status AS type, e.occurred_at AS at
FROM mailjet_events e
JOIN recipients r ON r.id = e.recipient_id
WHERE r.job_id = %(job_id)s AND e.status IS NOT NULL
ORDER BY e.occurred_at, e.id;

-- lock_undated_event_fingerprints --
-- Before insert_mailjet_events, in the same transaction: a transaction-scoped lock per undated event's
-- fingerprint (sorted, so two batches cannot deadlock), so that two concurrent copies of one are stored once.
-- A statement of its own: insert_mailjet_events' NOT EXISTS then reads with a snapshot taken after the lock,
-- in which the other copy's insert, committed when it released the lock, shows. (Transaction-scoped: works
-- behind PgBouncer's transaction pooling.)
SELECT count(pg_advisory_xact_lock(hashtextextended(f.fingerprint, 0))) AS locked
FROM unnest(%(fingerprints)s::text[]) WITH ORDINALITY AS f(fingerprint, n);
