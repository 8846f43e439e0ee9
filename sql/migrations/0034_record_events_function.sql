-- Issue 20: one POST /events of one event is one statement, one round trip and one commit. It was four round
-- trips (BEGIN, insert_mailjet_events, advance_recipient_statuses, COMMIT; five with a suppressing event) and
-- with Mailjet's default of one event per POST those were a large part of the POST's cost in the web and in
-- PostgreSQL (README, "Tracking events"). mailer_record_events is called once, in autocommit (its own
-- transaction): one statement stores the events, matches them and moves their recipients' statuses; a second
-- one, only for events that suppress (rare), adds their addresses to the apps' lists.
--
-- The status update is part of the insert's statement, from the new events' own statuses: a stored event was
-- applied when it was stored (here, or by the sender's apply_pending_events and advance_recipient_statuses in
-- the transaction that matched it), so a recipient's status already ranks at least as high as each of its
-- stored events, and the highest new one is all that can move it. As a statement of its own, with the
-- recipients as an array parameter, it was planned again for most calls (PostgreSQL's plan cache keeps a
-- custom plan when the array's size changes the estimate): 400 µs of planning per POST. The insert has no
-- parameter but the events: PL/pgSQL keeps its plan for the session (planning it takes 3 to 10 ms), also behind
-- PgBouncer, where the client prepares nothing and it was planned for every POST.
--
-- A VOLATILE function takes a fresh snapshot for each statement it runs (READ COMMITTED), as separate
-- statements from the client did: the insert reads after the undated events' locks are held, and the
-- suppression reads the events just inserted.

CREATE FUNCTION mailer_suppress_from_events(event_ids bigint[])
RETURNS TABLE (app_id bigint, email text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    -- Add the addresses of these matched events that suppress (hard bounce, blocked, spam, unsub) to
    -- the list of the app that sent the message; source and reason are the Mailjet event's name.
    RETURN QUERY
    INSERT INTO suppressions AS x (app_id, email, reason, source)
    SELECT DISTINCT ON (j.app_id, lower(r.email))
           j.app_id, lower(r.email), lower(btrim(e.name)), lower(btrim(e.name))
    FROM mailjet_events e
    JOIN recipients r ON r.id = e.recipient_id
    JOIN jobs j ON j.id = r.job_id
    WHERE e.id = ANY(event_ids) AND e.suppresses
    ORDER BY j.app_id, lower(r.email), e.occurred_at, e.id
    ON CONFLICT ON CONSTRAINT suppressions_pkey DO NOTHING
    RETURNING x.app_id, x.email;
END;
$$;

-- `batch`: the events (services/tracking.py, event_rows), each fingerprint once. `undated`: the fingerprints of
-- those without a usable time of their own, sorted.
CREATE FUNCTION mailer_record_events(batch jsonb, undated text[], OUT new_events integer, OUT matched_events integer)
LANGUAGE plpgsql AS $$
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
        -- Each recipient's highest-ranked new status (events of an unknown name have none).
        SELECT DISTINCT ON (x.recipient_id) x.recipient_id, x.status, s.rank
        FROM inserted AS x
        JOIN recipient_statuses AS s ON s.status = x.status
        WHERE x.recipient_id IS NOT NULL
        ORDER BY x.recipient_id, s.rank DESC, x.occurred_at DESC
    ), targets AS MATERIALIZED (
        -- Every matched recipient, with the MessageID of an event that found it by CustomID + email (a
        -- recipient whose MessageID is not known takes it, so that its later events that carry only a MessageID,
        -- opens and clicks, find it too) and its best new status.
        SELECT i.recipient_id, i.recipient_job_id, min(i.message_id) AS message_id, b.status, b.rank
        FROM incoming AS i
        LEFT JOIN best AS b ON b.recipient_id = i.recipient_id
        WHERE i.recipient_id IS NOT NULL
        GROUP BY i.recipient_id, i.recipient_job_id, b.status, b.rank
    ), changed AS (
        -- One update of each recipient: its MessageID when it has none, its status when the new one ranks higher,
        -- never lower. The rank of the current status is a subquery (not a join) so that a concurrent update is
        -- re-checked against the row's newest status. The keys as arrays too: the months of these jobs only
        -- (run-time pruning), reached by the primary key; joined to `targets` alone, a month partition without
        -- statistics yet is hashed whole for every batch.
        UPDATE recipients AS r
        SET message_id = coalesce(r.message_id, t.message_id),
            status = CASE WHEN t.rank > (SELECT rs.rank FROM recipient_statuses AS rs WHERE rs.status = r.status)
                          THEN t.status ELSE r.status END,
            updated_at = now()
        FROM targets AS t
        WHERE r.job_id = t.recipient_job_id AND r.id = t.recipient_id
          AND r.job_id = ANY(ARRAY(SELECT t2.recipient_job_id FROM targets AS t2))
          AND r.id = ANY(ARRAY(SELECT t2.recipient_id FROM targets AS t2))
          AND ((r.message_id IS NULL AND t.message_id IS NOT NULL)
               OR t.rank > (SELECT rs.rank FROM recipient_statuses AS rs WHERE rs.status = r.status))
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
