-- insert_app --
-- Register an app; only the hash of its key's secret is stored.
INSERT INTO apps (name, key_id, key_hash)
VALUES (%(name)s, %(key_id)s, %(key_hash)s)
RETURNING id, name, key_id, created_at, revoked_at;

-- list_apps --
-- Every app, revoked ones included.
SELECT id, name, key_id, created_at, revoked_at
FROM apps
ORDER BY name;

-- revoke_app --
-- Revoke an app's key; its jobs stay.
UPDATE apps
SET revoked_at = now()
WHERE name = %(name)s AND revoked_at IS NULL
RETURNING id, name, key_id, created_at, revoked_at;

-- get_app_by_key_id --
-- The active app a key belongs to, with the hash to compare in constant time.
SELECT id, name, key_hash
FROM apps
WHERE key_id = %(key_id)s AND revoked_at IS NULL;

-- rotate_app_key --
-- Give an active app a new key; the old one stops working at once.
UPDATE apps
SET key_id = %(key_id)s, key_hash = %(key_hash)s
WHERE name = %(name)s AND revoked_at IS NULL
RETURNING id, name, key_id, created_at, revoked_at;
