-- The activity feed, GET /activity (issue 22): every recipient status change of an app, once, in commit order.
--
-- Every change is a row of recipient_activity, written by triggers on recipients (so by every writer: the
-- sender, POST /events through mailer_record_events, suppressions, test mode, revocation), whether or not the
-- app has a webhook endpoint. Each row carries the top-level transaction id of its writer (`xid`, xid8: 64 bits,
-- never wraps). The feed orders by (xid, id) and returns only rows whose xid is below the reader's snapshot
-- xmin: every transaction below it has ended, and any later writer is given a larger xid, so a row can never
-- appear behind a cursor already handed out. Identity ids alone are not a commit order: a transaction that
-- takes id 5 and commits after the one that took id 6 would be skipped by a reader already past 6.
-- The cost: one open transaction that holds an xid holds the feed back until it ends (README, "Activity feed").
--
-- The body of a change (the outbound webhook's) is built when the feed is read; the row keeps what could
-- change later (the recipient's message id, its address) as it was. Month partitions by the change's time, as
-- the other time-keyed history (migration 0029), dropped by retention after MAILER_RETENTION_DAYS.

CREATE TABLE recipient_activity (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    xid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    app_id        bigint NOT NULL,
    recipient_id  bigint NOT NULL,
    job_id        uuid NOT NULL,
    email         text NOT NULL,
    message_id    bigint,
    status        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
) PARTITION BY RANGE (created_at);

INSERT INTO month_partitioned_tables (parent, kind) VALUES ('recipient_activity', 'time');
SELECT mailer_ensure_month_partitions('recipient_activity', 'time', (now() AT TIME ZONE 'UTC')::date,
                                      ((now() AT TIME ZONE 'UTC') + interval '3 months')::date);

ALTER TABLE recipient_activity ADD CONSTRAINT recipient_activity_pkey PRIMARY KEY (id, created_at);
CREATE INDEX recipient_activity_app_xid_idx ON recipient_activity (app_id, xid, id);

-- One statement's changes in one INSERT (the transition tables are the ones the webhook trigger already has).
-- The app comes from a probe of the job's primary key per change, and index probes are forced (a function-level
-- SET, PgBouncer-safe): with statistics of a nearly empty jobs_live, a join was planned as a hash of every
-- partition of jobs for each statement, and the same subquery unforced scanned jobs_live per change (358 µs
-- per email under bench/pg_cost.py, 10,000 waiting jobs); forced, it is a few µs (BENCHMARKS.md, issue 22).
CREATE FUNCTION activity_recipients_updated() RETURNS trigger LANGUAGE plpgsql SET enable_seqscan TO off AS $$
BEGIN
    INSERT INTO recipient_activity (app_id, recipient_id, job_id, email, message_id, status)
    SELECT (SELECT j.app_id FROM jobs j WHERE j.id = n.job_id), n.id, n.job_id, n.email, n.message_id, n.status
    FROM new_rows n
    JOIN old_rows o ON o.id = n.id
    WHERE n.status IS DISTINCT FROM o.status AND n.status <> 'pending'  -- a retry's reset is no change to report
    ORDER BY n.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER recipients_activity AFTER UPDATE ON recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION activity_recipients_updated();

-- A recipient stored with another status than `pending` (none in production today) is a change too; as for
-- webhooks (0016), a row trigger whose WHEN clause spares POST /queue's pending recipients any call.
CREATE FUNCTION activity_recipient_inserted() RETURNS trigger LANGUAGE plpgsql SET enable_seqscan TO off AS $$
BEGIN
    INSERT INTO recipient_activity (app_id, recipient_id, job_id, email, message_id, status)
    SELECT j.app_id, NEW.id, NEW.job_id, NEW.email, NEW.message_id, NEW.status FROM jobs j WHERE j.id = NEW.job_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER recipients_activity_insert AFTER INSERT ON recipients
    FOR EACH ROW WHEN (new.status <> 'pending') EXECUTE FUNCTION activity_recipient_inserted();
