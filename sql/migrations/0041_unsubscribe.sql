-- One-click unsubscribe for bulk mail (issue 22, RFC 8058):
-- 1. A suppression has a scope: 'all' (every message; the default, and what bounces, blocked, spam and
--    Mailjet's unsub add) or 'bulk' (the app's bulk mail only: what POST /unsubscribe/{token} adds).
-- 2. A new source 'unsubscribe' for the entries the one-click link adds.
-- 3. A suppressing Mailjet event on an address that has a 'bulk' entry widens it to 'all' (a hard bounce
--    is no less final because the address once unsubscribed from bulk mail). Everything else about the
--    function is as in 0034/0036; its SET jit = off is restated because CREATE OR REPLACE drops it.

ALTER TABLE suppressions ADD COLUMN scope text NOT NULL DEFAULT 'all'
    CONSTRAINT suppressions_scope_check CHECK (scope IN ('all', 'bulk'));

ALTER TABLE suppressions DROP CONSTRAINT suppressions_source_check;
ALTER TABLE suppressions ADD CONSTRAINT suppressions_source_check
    CHECK (source IN ('api', 'bounce', 'blocked', 'spam', 'unsub', 'unsubscribe'));

CREATE OR REPLACE FUNCTION mailer_suppress_from_events(event_ids bigint[])
RETURNS TABLE (app_id bigint, email text) LANGUAGE plpgsql SET jit = off AS $$
#variable_conflict use_column
BEGIN
    -- Add the addresses of these matched events that suppress (hard bounce, blocked, spam, unsub) to
    -- the list of the app that sent the message; source and reason are the Mailjet event's name. A
    -- bulk-only entry becomes one for all mail (it keeps its source and reason).
    RETURN QUERY
    INSERT INTO suppressions AS x (app_id, email, reason, source)
    SELECT DISTINCT ON (j.app_id, lower(r.email))
           j.app_id, lower(r.email), lower(btrim(e.name)), lower(btrim(e.name))
    FROM mailjet_events e
    JOIN recipients r ON r.id = e.recipient_id
    JOIN jobs j ON j.id = r.job_id
    WHERE e.id = ANY(event_ids) AND e.suppresses
    ORDER BY j.app_id, lower(r.email), e.occurred_at, e.id
    ON CONFLICT ON CONSTRAINT suppressions_pkey DO UPDATE SET scope = 'all' WHERE x.scope = 'bulk'
    RETURNING x.app_id, x.email;
END;
$$;
