-- Suppression lists: per app, the addresses mailer must not send to. Filled by Mailjet's events
-- (hard bounce, blocked, spam, unsub) and by the API. Emails are stored lower-cased (by SQL's
-- lower(), the same function every lookup uses).

CREATE TABLE suppressions (
    app_id      bigint NOT NULL CONSTRAINT suppressions_app_id_fkey REFERENCES apps (id),
    email       text NOT NULL,
    reason      text,
    -- 'api', or the name of the Mailjet event that added the address
    source      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT suppressions_pkey PRIMARY KEY (app_id, email),
    CONSTRAINT suppressions_email_lower CHECK (email = lower(email)),
    CONSTRAINT suppressions_email_not_blank CHECK (length(btrim(email)) > 0),
    CONSTRAINT suppressions_reason_length CHECK (length(reason) <= 200),
    CONSTRAINT suppressions_source_check CHECK (source IN ('api', 'bounce', 'blocked', 'spam', 'unsub'))
);
-- GET /suppressions lists newest first with a (created_at, email) keyset cursor; the primary key
-- serves the lookups by address (sending, POST, DELETE).
CREATE INDEX suppressions_app_created_idx ON suppressions (app_id, created_at DESC, email DESC);
