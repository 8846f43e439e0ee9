-- lock_app_for_templates --
-- Serializes the template creations of one app, so that two at once cannot both pass the count of
-- MAILER_TEMPLATE_MAX_PER_APP (FOR NO KEY UPDATE does not block the key-share locks of inserted jobs).
SELECT id FROM apps WHERE id = %(app_id)s FOR NO KEY UPDATE;

-- insert_template --
-- A new template and its version 1, unless the app has max_templates live ones already (then no row).
WITH counted AS (
    SELECT count(*) AS templates FROM templates WHERE app_id = %(app_id)s AND deleted_at IS NULL
), new_template AS (
    INSERT INTO templates (id, app_id, name, active_version, latest_version)
    SELECT %(id)s, %(app_id)s, %(name)s, 1, 1
    FROM counted
    WHERE counted.templates < %(max_templates)s
    RETURNING id, app_id, name, active_version, latest_version, created_at, updated_at
), first_version AS (
    INSERT INTO template_versions (template_id, version, subject, html, text, variables)
    SELECT id, 1, %(subject)s, %(html)s, %(text)s, %(variables)s FROM new_template
)
SELECT id, app_id, name, active_version, latest_version, created_at, updated_at FROM new_template;

-- insert_template_version --
-- The next version of a live template of the app, unless it has max_versions already (then no row).
WITH numbered AS (
    UPDATE templates
    SET latest_version = latest_version + 1, updated_at = now()
    WHERE id = %(template_id)s AND app_id = %(app_id)s AND deleted_at IS NULL
      AND latest_version < %(max_versions)s
    RETURNING id, latest_version
)
INSERT INTO template_versions (template_id, version, subject, html, text, variables)
SELECT id, latest_version, %(subject)s, %(html)s, %(text)s, %(variables)s FROM numbered
RETURNING template_id, version, created_at;

-- get_template --
-- One live template of one app.
SELECT id, app_id, name, active_version, latest_version, created_at, updated_at
FROM templates
WHERE id = %(id)s AND app_id = %(app_id)s AND deleted_at IS NULL;

-- list_templates --
-- An app's live templates, newest first, a page after the cursor (created_at, id).
SELECT id, app_id, name, active_version, latest_version, created_at, updated_at
FROM templates
WHERE app_id = %(app_id)s AND deleted_at IS NULL
  AND (%(after_created_at)s::timestamptz IS NULL OR (created_at, id) < (%(after_created_at)s, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- list_template_versions --
-- Every version of a live template of the app, oldest first.
SELECT v.template_id, v.version, v.subject, v.html, v.text, v.variables, v.created_at
FROM template_versions v
JOIN templates t ON t.id = v.template_id
WHERE t.id = %(template_id)s AND t.app_id = %(app_id)s AND t.deleted_at IS NULL
ORDER BY v.version;

-- get_template_version --
-- One version (the active one when version is null) of a live template of the app.
SELECT v.template_id, v.version, v.subject, v.html, v.text, v.variables, v.created_at
FROM templates t
JOIN template_versions v ON v.template_id = t.id AND v.version = coalesce(%(version)s::integer, t.active_version)
WHERE t.id = %(template_id)s AND t.app_id = %(app_id)s AND t.deleted_at IS NULL;

-- find_template_versions --
-- The versions that messages name: for each (template id, version or null for the active one) the version's
-- number and, unless the caller has it compiled already (known, as "id:version"), its source. Templates of
-- other apps and deleted ones are left out; so are versions that do not exist.
SELECT wanted.template_id, wanted.version AS wanted_version, v.version,
       CASE WHEN known.key IS NULL THEN v.subject END AS subject,
       CASE WHEN known.key IS NULL THEN v.html END AS html,
       CASE WHEN known.key IS NULL THEN v.text END AS text,
       CASE WHEN known.key IS NULL THEN v.variables END AS variables,
       known.key IS NULL AS has_source
FROM unnest(%(template_ids)s::uuid[], %(versions)s::integer[]) AS wanted(template_id, version)
JOIN templates t ON t.id = wanted.template_id AND t.app_id = %(app_id)s AND t.deleted_at IS NULL
JOIN template_versions v ON v.template_id = t.id AND v.version = coalesce(wanted.version, t.active_version)
LEFT JOIN unnest(%(known)s::text[]) AS known(key) ON known.key = v.template_id::text || ':' || v.version;

-- set_template_active_version --
-- Make an existing version the active one; no row when the template or the version is not there.
UPDATE templates
SET active_version = %(version)s, updated_at = now()
-- Versions are numbered 1..latest_version without gaps and never deleted, so the locked row alone says
-- whether one exists (re-checked on its newest state when this UPDATE waited on a POST /versions).
WHERE id = %(id)s AND app_id = %(app_id)s AND deleted_at IS NULL
  AND %(version)s BETWEEN 1 AND latest_version
RETURNING id, app_id, name, active_version, latest_version, created_at, updated_at;

-- lock_template --
-- A live template of the app, locked against schedules naming it until the transaction ends (DELETE).
SELECT id FROM templates
WHERE id = %(id)s AND app_id = %(app_id)s AND deleted_at IS NULL
FOR UPDATE;

-- share_template --
-- A live template of the app, kept from being deleted until the transaction ends (a schedule naming it).
SELECT id FROM templates
WHERE id = %(id)s AND app_id = %(app_id)s AND deleted_at IS NULL
FOR SHARE;

-- count_active_schedules_of_template --
-- Active schedules of the app that name the template.
SELECT count(*) AS schedules
FROM schedules_active
WHERE template_id = %(template_id)s AND app_id = %(app_id)s;

-- delete_template --
-- Mark a live template deleted; it and its versions stay for the jobs that name them.
UPDATE templates
SET deleted_at = now(), updated_at = now()
WHERE id = %(id)s AND app_id = %(app_id)s AND deleted_at IS NULL
RETURNING id;

-- list_template_version_dates --
-- The versions (number, when) of a live template of the app, oldest first, without their source: a listing.
SELECT v.version, v.created_at
FROM template_versions v
JOIN templates t ON t.id = v.template_id
WHERE t.id = %(template_id)s AND t.app_id = %(app_id)s AND t.deleted_at IS NULL
ORDER BY v.version;
