-- Dashboard sessions kept on the server, so a log-out ends a session for every copy of its cookie and no
-- session outlives its absolute lifetime. The cookie carries the session id; the row keeps only its
-- SHA-256, so reading this table gives nobody a usable cookie.
CREATE TABLE dashboard_sessions (
    id_hash    bytea       CONSTRAINT dashboard_sessions_pkey PRIMARY KEY
                           CONSTRAINT dashboard_sessions_id_hash_length CHECK (octet_length(id_hash) = 32),
    -- NULL: the operator's session; else the app whose key logged in, and that key's id (a rotate or a
    -- revoke ends the session)
    app_id     bigint      CONSTRAINT dashboard_sessions_app_id_fkey REFERENCES apps (id) ON DELETE CASCADE,
    key_id     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- fixed at the log-in: no request moves it
    expires_at timestamptz NOT NULL,
    CONSTRAINT dashboard_sessions_app_has_key CHECK ((app_id IS NULL) = (key_id IS NULL))
);

-- for deleting expired sessions at each log-in
CREATE INDEX dashboard_sessions_expires_at_idx ON dashboard_sessions (expires_at);
