-- Recurring schedules (reminders). Partitioned by state so that finished schedules leave the hot
-- table: the scheduler only ever scans schedules_active; schedules_done keeps the history.
CREATE TABLE schedules (
    id               uuid NOT NULL,
    app_id           bigint NOT NULL CONSTRAINT schedules_app_id_fkey REFERENCES apps (id),
    state            text NOT NULL CONSTRAINT schedules_state_check CHECK (state IN ('active', 'done')),
    message          jsonb NOT NULL,
    priority         text NOT NULL CONSTRAINT schedules_priority_check CHECK (priority IN ('transactional', 'bulk')),
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    start_local      timestamp NOT NULL,
    timezone         text NOT NULL,
    frequency        text NOT NULL CONSTRAINT schedules_frequency_check
                         CHECK (frequency IN ('DAILY', 'WEEKLY', 'MONTHLY', 'YEARLY')),
    interval         integer NOT NULL CONSTRAINT schedules_interval_check CHECK (interval >= 1),
    count            integer CONSTRAINT schedules_count_check CHECK (count >= 1),
    until_local      timestamp,
    -- the next occurrence not yet turned into a job; null once the schedule is done
    next_occurrence  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CONSTRAINT schedules_pkey PRIMARY KEY (id, state),
    CONSTRAINT schedules_count_or_until CHECK (count IS NULL OR until_local IS NULL),
    CONSTRAINT schedules_active_has_next CHECK (state = 'done' OR next_occurrence IS NOT NULL)
) PARTITION BY LIST (state);
CREATE TABLE schedules_active PARTITION OF schedules FOR VALUES IN ('active');
CREATE TABLE schedules_done PARTITION OF schedules FOR VALUES IN ('done');
CREATE INDEX schedules_active_due_idx ON schedules_active (next_occurrence);
CREATE INDEX schedules_app_idx ON schedules (app_id, created_at DESC, id DESC);

-- One row per occurrence: the unique key is what makes "exactly one job per occurrence" hold
-- with several workers, after a crash or after downtime. Skipped (missed) occurrences have no job.
CREATE TABLE schedule_occurrences (
    schedule_id  uuid NOT NULL,
    occurs_at    timestamptz NOT NULL,
    job_id       uuid CONSTRAINT schedule_occurrences_job_id_fkey REFERENCES jobs (id)
                     DEFERRABLE INITIALLY DEFERRED,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedule_occurrences_pkey PRIMARY KEY (schedule_id, occurs_at)
);

ALTER TABLE jobs ADD COLUMN schedule_id uuid;
CREATE INDEX jobs_schedule_idx ON jobs (schedule_id) WHERE schedule_id IS NOT NULL;
