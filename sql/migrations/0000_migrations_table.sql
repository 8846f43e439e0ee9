-- What `mailer db migrate` has applied: our numbered files and Procrastinate's schema version.
CREATE TABLE IF NOT EXISTS mailer_migrations (
    name        text CONSTRAINT mailer_migrations_pkey PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
