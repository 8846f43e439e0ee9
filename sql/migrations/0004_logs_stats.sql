-- GET /logs and GET /stats: an index for each log filter, and per-app, per-UTC-day counters kept by
-- statement-level triggers, so that neither `today` nor the stats ever read the jobs table.
--
-- The trigger functions run their SQL through EXECUTE so that it is planned for the transition table
-- at hand: a cached plan made for a 1-row statement (nested loop) would be disastrous for a 1-million-row
-- one, and one made for a bulk load (hash join over jobs) would scan jobs on every small insert.

-- Every log query is "one app's jobs, newest first": ORDER BY created_at DESC, id DESC.
-- No filter, since/until: jobs_app_created_idx (0001). status:
CREATE INDEX jobs_app_status_created_idx ON jobs (app_id, status, created_at DESC, id DESC);
-- metadata: `metadata @> '{"order_id": 1001}'`. Jobs without metadata stay out of the index (the query
-- repeats the predicate so that the planner may use it).
CREATE INDEX jobs_metadata_idx ON jobs USING gin (metadata jsonb_path_ops) WHERE metadata <> '{}'::jsonb;

-- recipient: which jobs of an app went to an address (lower-cased), newest first, read straight off the
-- primary key. recipients alone cannot answer this: it has no app_id nor created_at, so an address that
-- is common in other apps, or in this one, would cost one jobs lookup per job ever sent to it.
-- Filled from recipients by the trigger below; the job's app_id and created_at never change.
CREATE TABLE recipient_addresses (
    app_id      bigint NOT NULL,
    email       text NOT NULL,
    created_at  timestamptz NOT NULL,
    job_id      uuid NOT NULL CONSTRAINT recipient_addresses_job_id_fkey REFERENCES jobs (id) ON DELETE CASCADE,
    CONSTRAINT recipient_addresses_pkey PRIMARY KEY (app_id, email, created_at, job_id),
    CONSTRAINT recipient_addresses_email_lower_check CHECK (email = lower(email))
);
-- for the cascade when jobs are deleted
CREATE INDEX recipient_addresses_job_idx ON recipient_addresses (job_id);

CREATE FUNCTION recipient_addresses_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE $sql$
        INSERT INTO recipient_addresses (app_id, email, created_at, job_id)
        SELECT DISTINCT j.app_id, lower(r.email), j.created_at, j.id
        FROM inserted_recipients AS r
        JOIN jobs AS j ON j.id = r.job_id
        ON CONFLICT ON CONSTRAINT recipient_addresses_pkey DO NOTHING
    $sql$;
    RETURN NULL;
END;
$$;

CREATE TRIGGER recipient_addresses_on_insert
    AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS inserted_recipients
    FOR EACH STATEMENT EXECUTE FUNCTION recipient_addresses_add();

-- How many jobs of an app were created, and how many arrived in each final status, per UTC day.
-- Arrivals, not a snapshot: a job that fails, is retried and is then sent counts once under failed
-- and once under sent; deleting jobs changes nothing here. A count is the sum over its shards.
--
-- Shards: a counter row stays locked from the statement that bumps it to the end of its transaction,
-- so one row per (app, day, kind) would make all of an app's concurrent POST /queue transactions (and
-- its senders) take turns, and two transactions that create jobs for several apps in different orders
-- (schedule ticks) could deadlock. Each database session bumps its own shard (its backend pid mod 16),
-- so concurrent sessions rarely share a row (and when two do and deadlock, PostgreSQL aborts one);
-- reading sums at most 16 rows per (app, day, kind).
CREATE TABLE job_counts (
    app_id  bigint NOT NULL CONSTRAINT job_counts_app_id_fkey REFERENCES apps (id),
    day     date NOT NULL,
    kind    text NOT NULL,
    shard   smallint NOT NULL,
    count   bigint NOT NULL,
    CONSTRAINT job_counts_pkey PRIMARY KEY (app_id, day, kind, shard),
    CONSTRAINT job_counts_kind_check CHECK (kind IN ('created', 'sent', 'failed', 'suppressed', 'cancelled')),
    CONSTRAINT job_counts_shard_check CHECK (shard BETWEEN 0 AND 15),
    CONSTRAINT job_counts_count_check CHECK (count >= 0)
) WITH (fillfactor = 50);  -- room on each page, so that the constant increments stay HOT (no index churn)

-- One upsert per (app, day, kind) per statement, however many jobs the statement touched: a batch of
-- 500 jobs changes one counter row, not 500. Rows are upserted in key order, so one statement never
-- locks counters in an order that another statement reverses.
CREATE FUNCTION job_counts_add_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE $sql$
        INSERT INTO job_counts AS c (app_id, day, kind, shard, count)
        SELECT app_id, day, kind, pg_backend_pid() % 16, count(*)
        FROM (
            -- created: on the UTC day of created_at
            SELECT app_id, (created_at AT TIME ZONE 'UTC')::date AS day, 'created' AS kind
            FROM inserted_jobs
            UNION ALL
            -- a job can be born final (every recipient suppressed): that counts today, like any change
            SELECT app_id, (now() AT TIME ZONE 'UTC')::date, status
            FROM inserted_jobs
            WHERE status IN ('sent', 'failed', 'suppressed', 'cancelled')
        ) AS arrivals
        GROUP BY app_id, day, kind
        ORDER BY app_id, day, kind
        ON CONFLICT ON CONSTRAINT job_counts_pkey DO UPDATE SET count = c.count + excluded.count
    $sql$;
    RETURN NULL;
END;
$$;

CREATE FUNCTION job_counts_add_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A status change counts on the UTC day of its transaction: now(), which is also the updated_at
    -- that every job query sets. Only arrivals in a final status count; an update that keeps the
    -- status, or moves to queued, scheduled or sending, counts nothing.
    EXECUTE $sql$
        INSERT INTO job_counts AS c (app_id, day, kind, shard, count)
        SELECT n.app_id, (now() AT TIME ZONE 'UTC')::date, n.status, pg_backend_pid() % 16, count(*)
        FROM new_jobs AS n
        JOIN old_jobs AS o ON o.id = n.id
        WHERE n.status IS DISTINCT FROM o.status
          AND n.status IN ('sent', 'failed', 'suppressed', 'cancelled')
        GROUP BY n.app_id, n.status
        ORDER BY n.app_id, n.status
        ON CONFLICT ON CONSTRAINT job_counts_pkey DO UPDATE SET count = c.count + excluded.count
    $sql$;
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_counts_on_insert
    AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_add_inserted();

-- (PostgreSQL allows transition tables only on a trigger for a single event: hence two triggers.)
CREATE TRIGGER job_counts_on_update
    AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_add_updated();

-- What exists already. Creating the triggers locked jobs and recipients against writes until this
-- migration commits, so nothing is counted twice or missed. Final statuses come from the audit trail:
-- each arrival in one wrote a job event of that name, at the time it happened.
INSERT INTO recipient_addresses (app_id, email, created_at, job_id)
SELECT DISTINCT j.app_id, lower(r.email), j.created_at, j.id
FROM recipients AS r
JOIN jobs AS j ON j.id = r.job_id;

INSERT INTO job_counts (app_id, day, kind, shard, count)
SELECT app_id, day, kind, 0, count(*)
FROM (
    SELECT app_id, (created_at AT TIME ZONE 'UTC')::date AS day, 'created' AS kind
    FROM jobs
    UNION ALL
    SELECT j.app_id, (e.at AT TIME ZONE 'UTC')::date, e.type
    FROM job_events AS e
    JOIN jobs AS j ON j.id = e.job_id
    WHERE e.type IN ('sent', 'failed', 'suppressed', 'cancelled')
) AS arrivals
GROUP BY app_id, day, kind;
