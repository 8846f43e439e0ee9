-- insert_app --
-- Register an app; only the hash of its key's secret is stored.
INSERT INTO apps (name, key_id, key_hash, from_domains, test)
VALUES (%(name)s, %(key_id)s, %(key_hash)s, %(from_domains)s, %(test)s)
RETURNING id, name, key_id, created_at, revoked_at, from_domains, test;

-- list_apps --
-- Every app, revoked ones included.
SELECT id, name, key_id, created_at, revoked_at, from_domains, test
FROM apps
ORDER BY name;

-- lock_app_by_name --
-- One app, revoked or not, locked until the end of the transaction (revoking or changing it).
SELECT id, name, key_id, created_at, revoked_at, from_domains, test
FROM apps
WHERE name = %(name)s
FOR NO KEY UPDATE;

-- revoke_app --
-- Revoke an app's key; its jobs stay.
UPDATE apps
SET revoked_at = now()
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id, name, key_id, created_at, revoked_at, from_domains, test;

-- get_app_by_key_id --
-- The active app a key belongs to, with the hash to compare in constant time and whether it is a test app (its
-- key must then start mk_test_, and only then).
SELECT id, name, key_hash, test
FROM apps
WHERE key_id = %(key_id)s AND revoked_at IS NULL;

-- get_app_sending_rules --
-- What decides whether an app may send a message now: its key, whether it is revoked, its domains.
SELECT id, key_id, revoked_at, from_domains
FROM apps
WHERE id = %(id)s;

-- rotate_app_key --
-- Give an active app a new key; the old one stops working at once.
UPDATE apps
SET key_id = %(key_id)s, key_hash = %(key_hash)s
WHERE name = %(name)s AND revoked_at IS NULL
RETURNING id, name, key_id, created_at, revoked_at, from_domains, test;

-- set_app_from_domains --
-- Change the domains an active app may send from (null: any).
UPDATE apps
SET from_domains = %(from_domains)s
WHERE name = %(name)s AND revoked_at IS NULL
RETURNING id, name, key_id, created_at, revoked_at, from_domains, test;

-- cancel_jobs_of_app --
-- A revoked app sends nothing more: its jobs still waiting are cancelled, each with its audit event. Not one
-- whose earlier attempt may have reached Mailjet (verify_before_send): the sender asks Mailjet first, and it
-- ends sent if Mailjet has it, cancelled if not (claim_due_jobs). Jobs already being sent finish as they are.
WITH cancelled AS (
    UPDATE jobs
    SET status = 'cancelled', updated_at = now()
    WHERE app_id = %(app_id)s AND status IN ('scheduled', 'queued') AND NOT verify_before_send
    RETURNING id
)
INSERT INTO job_events (job_id, type, detail)
SELECT id, 'app_revoked', jsonb_build_object('by', 'operator', 'status', 'cancelled') FROM cancelled
RETURNING job_id;

-- finish_schedules_of_app --
-- A revoked app's schedules fire no more: each active one is done (it moves to schedules_done).
UPDATE schedules
SET state = 'done', next_occurrence = NULL, finished_at = now(), updated_at = now()
WHERE app_id = %(app_id)s AND state = 'active'
RETURNING id;

-- disable_webhook_endpoints_of_app --
-- A revoked app's endpoints get nothing more; one disabled already keeps its earlier time and reason.
UPDATE webhook_endpoints
SET disabled_at = now(), disabled_reason = %(reason)s, updated_at = now()
WHERE app_id = %(app_id)s AND disabled_at IS NULL
RETURNING id;
