-- get_job_app --
-- The app a job belongs to, whichever it is: the operator's command line sees every app.
SELECT j.app_id, a.name AS app
FROM jobs AS j
JOIN apps AS a ON a.id = j.app_id
WHERE j.id = %(id)s;

-- get_app_by_name --
-- An app by its name, revoked or not.
SELECT id, name, revoked_at
FROM apps
WHERE name = %(name)s;

-- list_recent_jobs --
-- The newest `limit` jobs of every app (or of one), newest first: each app's newest read off
-- jobs_app_created_idx or jobs_app_status_created_idx, then merged (needs force_custom_plans).
SELECT j.id, a.name AS app, j.status, j.created_at
FROM apps AS a
CROSS JOIN LATERAL (
    SELECT id, status, created_at
    FROM jobs
    WHERE app_id = a.id AND (%(status)s::text IS NULL OR status = %(status)s::text)
    ORDER BY created_at DESC, id DESC
    LIMIT %(limit)s
) AS j
WHERE %(app_id)s::bigint IS NULL OR a.id = %(app_id)s::bigint
ORDER BY j.created_at DESC, j.id DESC
LIMIT %(limit)s;

-- get_last_job_event_id --
-- Where a tail of the audit trail starts.
SELECT coalesce(max(id), 0) AS id
FROM job_events;

-- list_job_events_after --
-- Up to `limit` audit events after `after_id`, with their job's app, in id order.
SELECT e.id, e.job_id, e.type, e.at, j.app_id, a.name AS app
FROM job_events AS e
JOIN jobs AS j ON j.id = e.job_id
JOIN apps AS a ON a.id = j.app_id
WHERE e.id > %(after_id)s::bigint
ORDER BY e.id
LIMIT %(limit)s;

-- list_job_events_by_id --
-- These audit events (ones a tail skipped while their transaction had not committed), in id order.
SELECT e.id, e.job_id, e.type, e.at, j.app_id, a.name AS app
FROM job_events AS e
JOIN jobs AS j ON j.id = e.job_id
JOIN apps AS a ON a.id = j.app_id
WHERE e.id = ANY(%(ids)s::bigint[])
ORDER BY e.id;
