-- Issue 19, hot and cold apart, for the tables keyed by a job id. `jobs` is PARTITION BY LIST (status):
-- jobs_live holds the scheduled, queued and sending jobs (the hot set every claim reads; its partial indexes
-- jobs_due_idx and jobs_sending_idx live there only), jobs_done the ended ones, PARTITION BY RANGE (id) in
-- month partitions (0027: a UUIDv7 id is its creation time) plus jobs_done_default. A job that ends is an
-- UPDATE of its status, which PostgreSQL carries out as a move from jobs_live to jobs_done (a retry moves it
-- back). recipients, job_events and recipient_addresses are PARTITION BY RANGE (job_id) on the same month
-- bounds, each with a DEFAULT partition: one month of jobs has its whole story in partitions of that month,
-- and retention drops them together (mailer/services/retention.py) instead of deleting row by row.
--
-- Keys. A unique index of a partitioned table must contain its partition key. jobs: jobs_live's primary key
-- is (id) and so is jobs_done's (its partition key is id), so an id is unique in each; jobs_ids_unique (below)
-- refuses an insert whose id the other one holds. recipients and job_events keep their identity ids (one
-- sequence each, never reused), with (id, job_id) as primary key: led by id, it still serves lookups by id.
-- Foreign keys cannot reference these parents by id alone, so the three that did are dropped:
-- mailjet_events.recipient_id and webhook_messages.recipient_id (those tables expire by their own time) and
-- schedule_occurrences.job_id (retention deletes the occurrences of the months it drops).
--
-- An existing installation is converted here, in the one transaction of this migration: every row is copied
-- (set-based) into the new tables, the old ones dropped, then indexes and triggers made. The tables are locked
-- (ACCESS EXCLUSIVE) for the whole of it: README, "Upgrading to partitioned history", gives the time per
-- million jobs.

ALTER TABLE mailjet_events DROP CONSTRAINT IF EXISTS mailjet_events_recipient_id_fkey;
ALTER TABLE webhook_messages DROP CONSTRAINT IF EXISTS webhook_messages_recipient_id_fkey;
ALTER TABLE schedule_occurrences DROP CONSTRAINT IF EXISTS schedule_occurrences_job_id_fkey;

LOCK TABLE jobs, recipients, job_events, recipient_addresses IN ACCESS EXCLUSIVE MODE;
ALTER TABLE jobs RENAME TO jobs_unpartitioned;
ALTER TABLE recipients RENAME TO recipients_unpartitioned;
ALTER TABLE job_events RENAME TO job_events_unpartitioned;
ALTER TABLE recipient_addresses RENAME TO recipient_addresses_unpartitioned;
ALTER SEQUENCE recipients_id_seq RENAME TO recipients_unpartitioned_id_seq;
ALTER SEQUENCE job_events_id_seq RENAME TO job_events_unpartitioned_id_seq;

CREATE TABLE jobs (
    id uuid NOT NULL,
    app_id bigint NOT NULL,
    status text NOT NULL,
    priority text NOT NULL,
    message jsonb NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    send_at timestamptz,
    run_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    verify_before_send boolean NOT NULL DEFAULT false,
    claimed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    schedule_id uuid,
    request_id text,
    body_purged_at timestamptz,
    message_bytes integer,
    claimed_by integer,
    lost_attempt_at timestamptz,
    CONSTRAINT jobs_priority_check CHECK (priority IN ('transactional', 'bulk')),
    CONSTRAINT jobs_status_check
        CHECK (status IN ('scheduled', 'queued', 'sending', 'sent', 'failed', 'suppressed', 'cancelled')),
    CONSTRAINT jobs_request_id_check CHECK (request_id ~ '^[A-Za-z0-9._-]{1,128}$')
) PARTITION BY LIST (status);
CREATE TABLE jobs_live PARTITION OF jobs FOR VALUES IN ('scheduled', 'queued', 'sending');
CREATE TABLE jobs_done PARTITION OF jobs FOR VALUES IN ('sent', 'failed', 'suppressed', 'cancelled')
    PARTITION BY RANGE (id);
CREATE TABLE jobs_done_default PARTITION OF jobs_done DEFAULT;

CREATE TABLE recipients (
    id bigint GENERATED ALWAYS AS IDENTITY,
    job_id uuid NOT NULL,
    kind text NOT NULL,
    position integer NOT NULL,
    email text NOT NULL,
    name text,
    status text NOT NULL DEFAULT 'pending',
    message_id bigint,
    message_uuid text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT recipients_kind_check CHECK (kind IN ('to', 'cc', 'bcc')),
    CONSTRAINT recipients_status_check CHECK (status IN ('pending', 'sent', 'deferred', 'delivered', 'bounced',
        'blocked', 'opened', 'clicked', 'unsubscribed', 'spam', 'failed', 'suppressed'))
) PARTITION BY RANGE (job_id);
CREATE TABLE recipients_default PARTITION OF recipients DEFAULT;

CREATE TABLE job_events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    job_id uuid NOT NULL,
    type text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    detail jsonb
) PARTITION BY RANGE (job_id);
CREATE TABLE job_events_default PARTITION OF job_events DEFAULT;

CREATE TABLE recipient_addresses (
    app_id bigint NOT NULL,
    email text NOT NULL,
    created_at timestamptz NOT NULL,
    job_id uuid NOT NULL,
    CONSTRAINT recipient_addresses_email_lower_check CHECK (email = lower(email))
) PARTITION BY RANGE (job_id);
CREATE TABLE recipient_addresses_default PARTITION OF recipient_addresses DEFAULT;

INSERT INTO month_partitioned_tables (parent, kind)
VALUES ('jobs_done', 'uuid7'), ('recipients', 'uuid7'), ('job_events', 'uuid7'), ('recipient_addresses', 'uuid7');

-- The months of the jobs kept, up to 3 months ahead (MAILER_PARTITIONS_AHEAD_MONTHS's default), in UTC whatever
-- the session's TimeZone, before any row is copied: a row copied into a DEFAULT partition makes its month's
-- later creation move it out again (0027). Old version 4 (random) ids outside these months stay in the defaults.
SELECT mailer_ensure_month_partitions(t.parent, t.kind, least(first.month, (now() AT TIME ZONE 'UTC')::date),
                                      ((now() AT TIME ZONE 'UTC') + interval '3 months')::date)
FROM month_partitioned_tables AS t,
     (SELECT (coalesce(min(created_at), now()) AT TIME ZONE 'UTC')::date AS month FROM jobs_unpartitioned) AS first
WHERE t.parent IN ('jobs_done'::regclass, 'recipients'::regclass, 'job_events'::regclass,
                   'recipient_addresses'::regclass);

INSERT INTO jobs (id, app_id, status, priority, message, metadata, send_at, run_at, attempts, last_error,
                  verify_before_send, claimed_at, created_at, updated_at, schedule_id, request_id, body_purged_at,
                  message_bytes, claimed_by, lost_attempt_at)
SELECT id, app_id, status, priority, message, metadata, send_at, run_at, attempts, last_error,
       verify_before_send, claimed_at, created_at, updated_at, schedule_id, request_id, body_purged_at,
       message_bytes, claimed_by, lost_attempt_at
FROM jobs_unpartitioned;
INSERT INTO recipients (id, job_id, kind, position, email, name, status, message_id, message_uuid, updated_at)
OVERRIDING SYSTEM VALUE
SELECT id, job_id, kind, position, email, name, status, message_id, message_uuid, updated_at
FROM recipients_unpartitioned;
INSERT INTO job_events (id, job_id, type, at, detail)
OVERRIDING SYSTEM VALUE
SELECT id, job_id, type, at, detail
FROM job_events_unpartitioned;
INSERT INTO recipient_addresses (app_id, email, created_at, job_id)
SELECT app_id, email, created_at, job_id
FROM recipient_addresses_unpartitioned;

-- The identities go on where the old ones stopped: an id is never given twice, even one whose row is gone
-- (a Mailjet event may still name a deleted recipient's id).
SELECT setval(pg_get_serial_sequence('recipients', 'id'), last_value, is_called) FROM recipients_unpartitioned_id_seq;
SELECT setval(pg_get_serial_sequence('job_events', 'id'), last_value, is_called) FROM job_events_unpartitioned_id_seq;

DROP TABLE jobs_unpartitioned, recipients_unpartitioned, job_events_unpartitioned, recipient_addresses_unpartitioned;

-- Keys and indexes, built once over the copied rows.
ALTER TABLE jobs_live ADD CONSTRAINT jobs_live_pkey PRIMARY KEY (id);
ALTER TABLE jobs_done ADD CONSTRAINT jobs_done_pkey PRIMARY KEY (id);
CREATE INDEX jobs_app_created_idx ON jobs (app_id, created_at DESC, id DESC);
CREATE INDEX jobs_app_status_created_idx ON jobs (app_id, status, created_at DESC, id DESC);
CREATE INDEX jobs_metadata_idx ON jobs USING gin (metadata jsonb_path_ops) WHERE metadata <> '{}'::jsonb;
CREATE INDEX jobs_due_idx ON jobs_live ((priority = 'bulk'), run_at) WHERE status IN ('queued', 'scheduled');
CREATE INDEX jobs_sending_idx ON jobs_live (claimed_at) WHERE status = 'sending';
CREATE INDEX jobs_schedule_idx ON jobs_live (schedule_id) WHERE schedule_id IS NOT NULL;
-- Ended jobs whose body is still there, by end time (retention's body purge). Deletion is by partition now:
-- 0008's jobs_body_purged_idx is not made again.
CREATE INDEX jobs_body_purge_idx ON jobs_done (updated_at) WHERE body_purged_at IS NULL;

ALTER TABLE recipients ADD CONSTRAINT recipients_pkey PRIMARY KEY (id, job_id);
ALTER TABLE recipients ADD CONSTRAINT recipients_job_kind_position_key UNIQUE (job_id, kind, position);
CREATE INDEX recipients_message_id_idx ON recipients (message_id) WHERE message_id IS NOT NULL;

ALTER TABLE job_events ADD CONSTRAINT job_events_pkey PRIMARY KEY (id, job_id);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

-- (0004's recipient_addresses_job_idx served retention's deletes only: not made again.)
ALTER TABLE recipient_addresses ADD CONSTRAINT recipient_addresses_pkey PRIMARY KEY (app_id, email, created_at, job_id);

-- An id is in jobs_live or in jobs_done, never both: each partition's primary key keeps it unique there, and
-- a job moves between them only by an UPDATE (one row, moved). Ids are UUIDv7 made once per job by
-- services/queueing.py; this refuses the one way left to have an id twice, an INSERT of a waiting job whose id
-- jobs_done holds. A statement-level trigger (row movement fires none); the join probes, per new job, the
-- primary key of the one month partition its id falls in (run-time pruning of the nested loop).
CREATE FUNCTION jobs_ids_unique() RETURNS trigger
LANGUAGE plpgsql SET enable_hashjoin TO off SET enable_mergejoin TO off AS $$
BEGIN
    IF EXISTS (SELECT FROM inserted_jobs AS n JOIN jobs_done AS d ON d.id = n.id
               WHERE n.status IN ('scheduled', 'queued', 'sending')) THEN
        RAISE EXCEPTION 'a job with this id exists already' USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$;

-- The triggers of the tables replaced, unchanged (row and transition-table triggers on a partitioned parent
-- apply to all its partitions).
CREATE TRIGGER jobs_ids_unique AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs FOR EACH STATEMENT EXECUTE FUNCTION jobs_ids_unique();
CREATE TRIGGER job_counts_on_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs FOR EACH STATEMENT EXECUTE FUNCTION job_counts_add_inserted();
CREATE TRIGGER job_counts_on_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION job_counts_add_updated();
CREATE TRIGGER job_events_append_only BEFORE DELETE OR UPDATE ON job_events
    FOR EACH ROW EXECUTE FUNCTION job_events_refuse_change();
CREATE TRIGGER recipients_webhook_fan_out AFTER UPDATE ON recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION webhook_recipients_updated();
CREATE TRIGGER recipients_webhook_fan_out_insert AFTER INSERT ON recipients
    FOR EACH ROW WHEN (new.status <> 'pending') EXECUTE FUNCTION webhook_recipient_inserted();

-- Autovacuum never analyzes a partitioned parent; its partitions it does.
ANALYZE jobs, recipients, job_events, recipient_addresses;
