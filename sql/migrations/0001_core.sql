-- The core of mailer: apps, jobs (which are also the send queue), recipients, events.

CREATE TABLE apps (
    id          bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT apps_pkey PRIMARY KEY,
    name        text NOT NULL CONSTRAINT apps_name_key UNIQUE,
    key_id      text NOT NULL CONSTRAINT apps_key_id_key UNIQUE,
    key_hash    bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT apps_name_not_blank CHECK (length(btrim(name)) > 0)
);

-- Allowed job statuses and recipient statuses, with the rank that keeps recipient
-- statuses from moving backwards (mirrored in mailer/domain/statuses.py; a test checks both agree).
CREATE TABLE job_statuses (
    status text CONSTRAINT job_statuses_pkey PRIMARY KEY,
    final  boolean NOT NULL
);
INSERT INTO job_statuses (status, final) VALUES
    ('scheduled', false), ('queued', false), ('sending', false),
    ('sent', true), ('failed', true), ('suppressed', true), ('cancelled', true);

CREATE TABLE recipient_statuses (
    status text CONSTRAINT recipient_statuses_pkey PRIMARY KEY,
    rank   integer NOT NULL
);
INSERT INTO recipient_statuses (status, rank) VALUES
    ('pending', 0), ('sent', 10), ('deferred', 20), ('delivered', 30),
    ('bounced', 40), ('blocked', 40), ('opened', 50), ('clicked', 60),
    ('unsubscribed', 70), ('spam', 80), ('failed', 90), ('suppressed', 90);

CREATE TABLE jobs (
    id              uuid CONSTRAINT jobs_pkey PRIMARY KEY,
    app_id          bigint NOT NULL CONSTRAINT jobs_app_id_fkey REFERENCES apps (id),
    status          text NOT NULL CONSTRAINT jobs_status_fkey REFERENCES job_statuses (status),
    priority        text NOT NULL CONSTRAINT jobs_priority_check CHECK (priority IN ('transactional', 'bulk')),
    message         jsonb NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    send_at         timestamptz,
    -- when the job may next be claimed by a sender (send_at, or the end of a retry backoff)
    run_at          timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    -- set when an attempt's outcome is unknown: Mailjet must be asked before sending again
    verify_before_send boolean NOT NULL DEFAULT false,
    claimed_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_app_created_idx ON jobs (app_id, created_at DESC, id DESC);
-- The send queue: only jobs waiting to be sent are in this index, so it stays small.
CREATE INDEX jobs_due_idx ON jobs ((priority = 'bulk'), run_at)
    WHERE status IN ('queued', 'scheduled');
CREATE INDEX jobs_sending_idx ON jobs (claimed_at) WHERE status = 'sending';

CREATE TABLE recipients (
    id            bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT recipients_pkey PRIMARY KEY,
    job_id        uuid NOT NULL CONSTRAINT recipients_job_id_fkey REFERENCES jobs (id) ON DELETE CASCADE,
    kind          text NOT NULL CONSTRAINT recipients_kind_check CHECK (kind IN ('to', 'cc', 'bcc')),
    position      integer NOT NULL,
    email         text NOT NULL,
    name          text,
    status        text NOT NULL DEFAULT 'pending' CONSTRAINT recipients_status_fkey REFERENCES recipient_statuses (status),
    message_id    bigint,
    message_uuid  text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT recipients_job_kind_position_key UNIQUE (job_id, kind, position)
);
CREATE INDEX recipients_message_id_idx ON recipients (message_id) WHERE message_id IS NOT NULL;

-- Every Mailjet event we received, once (fingerprint = hash of the raw event: Mailjet sends
-- no event id and retries whole batches). applied_at is null while its message is unknown.
CREATE TABLE mailjet_events (
    id            bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT mailjet_events_pkey PRIMARY KEY,
    fingerprint   text NOT NULL CONSTRAINT mailjet_events_fingerprint_key UNIQUE,
    name          text NOT NULL,
    status        text CONSTRAINT mailjet_events_status_fkey REFERENCES recipient_statuses (status),
    occurred_at   timestamptz NOT NULL,
    message_id    bigint,
    custom_id     text,
    email         text,
    suppresses    boolean NOT NULL DEFAULT false,
    payload       jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    recipient_id  bigint CONSTRAINT mailjet_events_recipient_id_fkey REFERENCES recipients (id) ON DELETE CASCADE,
    applied_at    timestamptz
);
CREATE INDEX mailjet_events_recipient_idx ON mailjet_events (recipient_id, occurred_at) WHERE recipient_id IS NOT NULL;
CREATE INDEX mailjet_events_unmatched_message_idx ON mailjet_events (message_id) WHERE applied_at IS NULL;
CREATE INDEX mailjet_events_unmatched_custom_idx ON mailjet_events (custom_id) WHERE applied_at IS NULL;

-- The job's audit trail: every state change, attempt, error and manual action. Append-only.
CREATE TABLE job_events (
    id       bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT job_events_pkey PRIMARY KEY,
    job_id   uuid NOT NULL CONSTRAINT job_events_job_id_fkey REFERENCES jobs (id),
    type     text NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    detail   jsonb
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

CREATE FUNCTION job_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'job_events is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER job_events_append_only
    BEFORE UPDATE OR DELETE ON job_events
    FOR EACH ROW EXECUTE FUNCTION job_events_refuse_change();

CREATE TABLE idempotency_keys (
    app_id           bigint NOT NULL CONSTRAINT idempotency_keys_app_id_fkey REFERENCES apps (id),
    key              text NOT NULL,
    request_hash     text NOT NULL,
    response_status  integer NOT NULL,
    response_body    jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (app_id, key)
);
