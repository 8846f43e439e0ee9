-- Engagement stats (issue 22), step 2 of 3 (0042: job_counts' kinds; 0046: the counting triggers and backfill).
-- What a recipient status says happened to the mail: its milestones. A status is only the highest-ranked event
-- (0001's ranks), so counting by status alone would lose what a jump skips: Mailjet's grouped callback (sent,
-- open, click and unsub of one recipient in one POST) would count delivered and unsubscribed, not the open and
-- the click; an open or a bounce arriving after a higher status (spam, unsubscribed) would count nothing.
--
-- Each recipient keeps the milestones it has reached as bits (`milestones`), ORed in by every writer that
-- applies Mailjet events, from each new event (mailer_record_events below; the sender's and recovery's
-- advance_recipient_statuses, sql/queries/events.sql). 0046's triggers count what a row's effective
-- milestones, its bits plus those its status implies, gained: writers that only set a status (suppressions,
-- the one-click unsubscribe) count by status, and rows stored before this migration (bits 0) are judged by
-- their status. A retry's reset to `pending` clears the bits (a new send counts its delivery again).
--
-- ADD COLUMN takes an ACCESS EXCLUSIVE lock on recipients, held here for a catalog change only (a constant
-- default is stored in the catalog, no row is rewritten), never through 0046's backfill. It takes no lock on
-- job_counts, so a sender holding one while it waits here makes no cycle.

ALTER TABLE recipients ADD COLUMN milestones smallint NOT NULL DEFAULT 0;

-- The bits a status proves: a click proves an open and a delivery (as Mailchimp counts it), spam and
-- unsubscribed prove a delivery; `blocked` (Mailjet refused to send) is no bounce: the mail was never sent.
-- pending, sent, deferred, failed and suppressed prove nothing.
CREATE FUNCTION mailer_status_milestone_bits(status text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (CASE status
        WHEN 'delivered' THEN 1
        WHEN 'opened' THEN 1 | 2
        WHEN 'clicked' THEN 1 | 2 | 4
        WHEN 'bounced' THEN 8
        WHEN 'blocked' THEN 16
        WHEN 'spam' THEN 1 | 32
        WHEN 'unsubscribed' THEN 1 | 64
        ELSE 0
    END)::smallint
$$;

-- The counter kinds (job_counts.kind) of a set of bits.
CREATE FUNCTION mailer_milestone_kinds(bits smallint) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_remove(ARRAY[
        CASE WHEN bits & 1 <> 0 THEN 'delivered' END,
        CASE WHEN bits & 2 <> 0 THEN 'opened' END,
        CASE WHEN bits & 4 <> 0 THEN 'clicked' END,
        CASE WHEN bits & 8 <> 0 THEN 'bounced' END,
        CASE WHEN bits & 16 <> 0 THEN 'blocked' END,
        CASE WHEN bits & 32 <> 0 THEN 'spam' END,
        CASE WHEN bits & 64 <> 0 THEN 'unsubscribed' END], NULL)
$$;

-- A status's counter kinds (the README's milestone table), from the one table above.
CREATE FUNCTION mailer_recipient_milestones(status text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT mailer_milestone_kinds(mailer_status_milestone_bits(status))
$$;

-- mailer_record_events as in 0034, with the milestones of every new event ORed into its recipient. CREATE OR
-- REPLACE drops the options ALTER FUNCTION ... SET gave it (0036): restated here (jit = off, enable_seqscan = off).
CREATE OR REPLACE FUNCTION mailer_record_events(batch jsonb, undated text[], OUT new_events integer,
                                                OUT matched_events integer)
LANGUAGE plpgsql SET jit = off SET enable_seqscan = off AS $$
DECLARE
    suppressing bigint[];
BEGIN
    IF cardinality(undated) > 0 THEN
        -- A transaction-scoped lock per undated event's fingerprint (sorted, so two batches cannot deadlock),
        -- so that two concurrent copies of one are stored once: the insert below reads with a snapshot taken
        -- after the lock, in which the other copy's insert, committed when it released the lock, shows.
        -- (Transaction-scoped: works behind PgBouncer's transaction pooling.)
        PERFORM count(pg_advisory_xact_lock(hashtextextended(f.fingerprint, 0)))
        FROM unnest(undated) WITH ORDINALITY AS f(fingerprint, n);
    END IF;

    -- Keep each Mailjet event once (duplicates by fingerprint are dropped) and match it to its
    -- recipient by MessageID, or by CustomID (our job id) + email when the send result is not
    -- stored yet. Unmatched events stay with applied_at null until the message becomes known.
    -- A recipient matched by CustomID + email whose MessageID is not known (the lookup before a resend found
    -- its message, but Mailjet did not list this recipient yet) takes the event's, so that its later events that
    -- carry only a MessageID (opens, clicks) find it too. An address listed twice in one message: the copy
    -- without a MessageID first (the one with a MessageID would have matched by it).
    -- With a CustomID (our job id, which Mailjet sends back with every event of the message) the MessageID is
    -- looked up in that job's month of recipients only (run-time partition pruning, 0028); without one, in every
    -- month's recipients_message_id_idx.
    -- A duplicate is found by the unique key (fingerprint, occurred_at): occurred_at is the event's own time,
    -- hashed into the fingerprint, so every copy of a dated event has the same key in the same month partition
    -- (0029). An undated event is stamped with its arrival, which differs between copies: it is looked up by
    -- fingerprint among the events of the last 28 days (mailer/mailjet/events.py, PLAUSIBLE_PAST; two
    -- partitions at most).
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
        FROM jsonb_to_recordset(batch)
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
    ), inserted AS (
        INSERT INTO mailjet_events (fingerprint, name, status, occurred_at, message_id, custom_id, email,
                                    suppresses, payload, recipient_id, applied_at)
        SELECT i.fingerprint, i.name, i.status, i.occurred_at, i.message_id, i.custom_id, i.email, i.suppresses,
               i.payload, i.recipient_id, CASE WHEN i.recipient_id IS NOT NULL THEN now() END
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
        RETURNING mailjet_events.id, mailjet_events.fingerprint, mailjet_events.recipient_id,
                  mailjet_events.status, mailjet_events.suppresses, mailjet_events.occurred_at
    ), best AS MATERIALIZED (
        -- Each recipient's highest-ranked new status (events of an unknown name have none), and the milestones of
        -- all its new events (grouped callbacks bring several).
        SELECT DISTINCT ON (x.recipient_id) x.recipient_id, x.status, s.rank,
               bit_or(mailer_status_milestone_bits(x.status)) OVER (PARTITION BY x.recipient_id) AS bits
        FROM inserted AS x
        JOIN recipient_statuses AS s ON s.status = x.status
        WHERE x.recipient_id IS NOT NULL
        ORDER BY x.recipient_id, s.rank DESC, x.occurred_at DESC
    ), targets AS MATERIALIZED (
        -- Every matched recipient, with the MessageID of an event that found it by CustomID + email (a
        -- recipient whose MessageID is not known takes it, so that its later events that carry only a MessageID,
        -- opens and clicks, find it too), its best new status and its new events' milestones.
        SELECT i.recipient_id, i.recipient_job_id, min(i.message_id) AS message_id, b.status, b.rank,
               coalesce(b.bits, 0::smallint) AS bits
        FROM incoming AS i
        LEFT JOIN best AS b ON b.recipient_id = i.recipient_id
        WHERE i.recipient_id IS NOT NULL
        GROUP BY i.recipient_id, i.recipient_job_id, b.status, b.rank, b.bits
    ), changed AS (
        -- One update of each recipient: its MessageID when it has none, its status when the new one ranks higher,
        -- never lower, its milestones when a new event proves one it lacks (an open after spam). The rank of the
        -- current status is a subquery (not a join) so that a concurrent update is re-checked against the row's
        -- newest status (its milestones too: `r.milestones` is the newest row's). The keys as arrays too: the
        -- months of these jobs only (run-time pruning), reached by the primary key; joined to `targets` alone, a
        -- month partition without statistics yet is hashed whole for every batch.
        UPDATE recipients AS r
        SET message_id = coalesce(r.message_id, t.message_id),
            status = CASE WHEN t.rank > (SELECT rs.rank FROM recipient_statuses AS rs WHERE rs.status = r.status)
                          THEN t.status ELSE r.status END,
            milestones = r.milestones | t.bits,
            updated_at = now()
        FROM targets AS t
        WHERE r.job_id = t.recipient_job_id AND r.id = t.recipient_id
          AND r.job_id = ANY(ARRAY(SELECT t2.recipient_job_id FROM targets AS t2))
          AND r.id = ANY(ARRAY(SELECT t2.recipient_id FROM targets AS t2))
          AND ((r.message_id IS NULL AND t.message_id IS NOT NULL)
               OR t.rank > (SELECT rs.rank FROM recipient_statuses AS rs WHERE rs.status = r.status)
               OR (t.bits & ~r.milestones) <> 0)
    )
    SELECT count(*), count(x.recipient_id),
           array_agg(x.id) FILTER (WHERE x.recipient_id IS NOT NULL AND x.suppresses)
    INTO new_events, matched_events, suppressing
    FROM inserted AS x;

    -- Hard bounces, blocks, spam complaints and unsubscribes put the address on the app's list (rare: most
    -- events, sent, opens and clicks, suppress nothing).
    IF suppressing IS NOT NULL THEN
        PERFORM FROM mailer_suppress_from_events(suppressing);
    END IF;
END;
$$;
