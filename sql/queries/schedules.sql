-- insert_schedule --
-- A new active schedule of an active app; nothing when the app is revoked. FOR SHARE conflicts with the
-- lock `mailer apps revoke` takes on the app's row first: a revoke under way makes this wait and then see
-- it revoked, and a revoke that comes after waits for this insert and then finishes the schedule.
INSERT INTO schedules (id, app_id, state, message, priority, metadata, start_local, timezone, frequency,
                       interval, count, until_local, next_occurrence, template_id, template_version)
SELECT %(id)s, apps.id, 'active', %(message)s, %(priority)s, %(metadata)s, %(start_local)s, %(timezone)s,
       %(frequency)s, %(interval)s, %(count)s, %(until_local)s, %(next_occurrence)s, %(template_id)s,
       %(template_version)s
FROM (SELECT id FROM apps WHERE id = %(app_id)s AND revoked_at IS NULL FOR SHARE) AS apps
RETURNING id, app_id, state, message, priority, metadata, start_local, timezone, frequency, interval, count,
          until_local, next_occurrence, template_id, template_version, created_at, updated_at, finished_at;

-- get_schedule --
-- One schedule of one app, active or done.
SELECT id, app_id, state, message, priority, metadata, start_local, timezone, frequency, interval, count,
       until_local, next_occurrence, template_id, template_version, created_at, updated_at, finished_at
FROM schedules
WHERE id = %(id)s AND app_id = %(app_id)s;

-- lock_active_schedule --
-- An active schedule, locked against the scheduler while it is changed.
SELECT id, app_id, state, message, priority, metadata, start_local, timezone, frequency, interval, count,
       until_local, next_occurrence, template_id, template_version, created_at, updated_at, finished_at
FROM schedules_active
WHERE id = %(id)s AND app_id = %(app_id)s
FOR UPDATE;

-- list_schedules --
-- An app's schedules, newest first, a page after the cursor (created_at, id).
SELECT id, app_id, state, message, priority, metadata, start_local, timezone, frequency, interval, count,
       until_local, next_occurrence, template_id, template_version, created_at, updated_at, finished_at
FROM schedules
WHERE app_id = %(app_id)s
  AND (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(after_created_at)s::timestamptz IS NULL OR (created_at, id) < (%(after_created_at)s, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- update_schedule --
-- Change an active schedule's message or rule and where it continues from.
UPDATE schedules_active
SET message = %(message)s, priority = %(priority)s, metadata = %(metadata)s, start_local = %(start_local)s,
    timezone = %(timezone)s, frequency = %(frequency)s, interval = %(interval)s, count = %(count)s,
    until_local = %(until_local)s, next_occurrence = %(next_occurrence)s, template_id = %(template_id)s,
    template_version = %(template_version)s, updated_at = now()
WHERE id = %(id)s
RETURNING id;

-- advance_schedule --
-- Move an active schedule to its next occurrence.
UPDATE schedules_active
SET next_occurrence = %(next_occurrence)s, updated_at = now()
WHERE id = %(id)s;

-- finish_schedule --
-- No further occurrences: the schedule leaves the active partition.
UPDATE schedules
SET state = 'done', next_occurrence = NULL, finished_at = now(), updated_at = now()
WHERE id = %(id)s AND app_id = %(app_id)s AND state = 'active'
RETURNING id;

-- delete_schedule --
-- Remove a schedule; the jobs it produced stay (with their schedule_id).
DELETE FROM schedules
WHERE id = %(id)s AND app_id = %(app_id)s
RETURNING id;

-- finish_due_schedules_of_revoked_apps --
-- Due schedules of revoked apps are done instead of firing (the revoke finishes them; one left active by an
-- older release, or by a race, would otherwise make a job the send claim cancels at every occurrence).
UPDATE schedules
SET state = 'done', next_occurrence = NULL, finished_at = now(), updated_at = now()
WHERE state = 'active' AND id IN (
    SELECT s.id
    FROM schedules_active s
    WHERE s.next_occurrence <= %(horizon)s
      AND EXISTS (SELECT FROM apps WHERE apps.id = s.app_id AND apps.revoked_at IS NOT NULL)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- claim_due_schedules --
-- Active schedules of active apps with an occurrence due before the horizon, skipping those another
-- scheduler holds.
SELECT id, app_id, state, message, priority, metadata, start_local, timezone, frequency, interval, count,
       until_local, next_occurrence, template_id, template_version, created_at, updated_at, finished_at
FROM schedules_active
WHERE next_occurrence <= %(horizon)s
  AND NOT EXISTS (SELECT FROM apps WHERE apps.id = schedules_active.app_id AND apps.revoked_at IS NOT NULL)
ORDER BY next_occurrence
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- claim_occurrence --
-- Reserve one occurrence for one job; nothing when it was produced (or skipped) already.
INSERT INTO schedule_occurrences (schedule_id, occurs_at, job_id)
VALUES (%(schedule_id)s, %(occurs_at)s, %(job_id)s)
ON CONFLICT ON CONSTRAINT schedule_occurrences_pkey DO NOTHING
RETURNING occurs_at;

-- list_schedule_jobs --
-- The jobs a schedule produced, in occurrence order.
SELECT job_id
FROM schedule_occurrences
WHERE schedule_id = %(schedule_id)s AND job_id IS NOT NULL
ORDER BY occurs_at;

-- cancel_scheduled_jobs_of_schedule --
-- A stopped schedule sends nothing more: cancel the jobs it produced that are still waiting.
WITH cancelled AS (
    UPDATE jobs
    SET status = 'cancelled', updated_at = now()
    WHERE schedule_id = %(schedule_id)s AND app_id = %(app_id)s AND status = 'scheduled'
    RETURNING id
)
INSERT INTO job_events (job_id, type, detail)
SELECT id, 'cancelled', jsonb_build_object('by', 'schedule stopped') FROM cancelled
RETURNING job_id;
