-- Fewer checks per email on the send path (BENCHMARKS.md, third round). pg_stat_statements over the send
-- loop showed five foreign-key lookups of a status table and five of jobs for every email, each a query
-- of its own fired by a trigger per row: together about a third of PostgreSQL's time per email.

-- 1. Statuses: a CHECK against the fixed list instead of a foreign key to the lookup tables. A CHECK is
-- evaluated in the row itself; the foreign key ran one `SELECT ... FOR KEY SHARE` per row written. The
-- tables stay (SQL reads recipient_statuses.rank; tests/integration/test_statuses_table.py checks that
-- tables, constraints and mailer/domain/statuses.py agree). Existing rows satisfied the foreign keys,
-- so the checks hold for them.
ALTER TABLE jobs
    DROP CONSTRAINT jobs_status_fkey,
    ADD CONSTRAINT jobs_status_check CHECK (status IN (
        'scheduled', 'queued', 'sending', 'sent', 'failed', 'suppressed', 'cancelled'));
ALTER TABLE recipients
    DROP CONSTRAINT recipients_status_fkey,
    ADD CONSTRAINT recipients_status_check CHECK (status IN (
        'pending', 'sent', 'deferred', 'delivered', 'bounced', 'blocked', 'opened', 'clicked',
        'unsubscribed', 'spam', 'failed', 'suppressed'));
ALTER TABLE mailjet_events
    DROP CONSTRAINT mailjet_events_status_fkey,
    ADD CONSTRAINT mailjet_events_status_check CHECK (status IN (
        'pending', 'sent', 'deferred', 'delivered', 'bounced', 'blocked', 'opened', 'clicked',
        'unsubscribed', 'spam', 'failed', 'suppressed'));

-- 2. The audit trail and the address index without a foreign key to jobs. Every job event is inserted by
-- the statement that inserts or updates its job, from that statement's RETURNING (sql/queries/*.sql), so
-- the job exists and is locked while its event is written; recipient_addresses is written only by its
-- trigger, from recipients joined to jobs. Retention deletes both explicitly before the jobs
-- (sql/queries/retention.sql: delete_job_events_of_jobs, delete_jobs).
ALTER TABLE job_events DROP CONSTRAINT job_events_job_id_fkey;
ALTER TABLE recipient_addresses DROP CONSTRAINT recipient_addresses_job_id_fkey;

-- 3. The final-status counters: most updates of jobs move none into a final status (the claim of every
-- send batch moves 50 to `sending`), so look before planning the join of the two transition tables.
CREATE OR REPLACE FUNCTION job_counts_add_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM new_jobs WHERE status IN ('sent', 'failed', 'suppressed', 'cancelled')) THEN
        RETURN NULL;
    END IF;
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
