-- insert_dashboard_session --
-- A new dashboard session, valid until now + lifetime; its expiry (an aware timestamp) for the cookie.
INSERT INTO dashboard_sessions (id_hash, app_id, key_id, expires_at)
VALUES (%(id_hash)s, %(app_id)s, %(key_id)s, now() + make_interval(secs => %(lifetime_s)s))
RETURNING expires_at;

-- get_dashboard_session --
-- The live session with this id, on every dashboard request with the cookie (one primary-key lookup):
-- whose it is, and whether an app session's key is still that app's active key.
SELECT session.app_id,
       session.app_id IS NULL OR app.id IS NOT NULL AS key_current
FROM dashboard_sessions AS session
LEFT JOIN apps AS app
       ON app.id = session.app_id AND app.key_id = session.key_id AND app.revoked_at IS NULL
WHERE session.id_hash = %(id_hash)s AND session.expires_at > now();

-- delete_dashboard_session --
-- Log-out: the session ends for every copy of its cookie.
DELETE FROM dashboard_sessions
WHERE id_hash = %(id_hash)s;

-- delete_expired_dashboard_sessions --
-- Sessions past their lifetime (refused anyway), removed at each log-in so the table stays small.
DELETE FROM dashboard_sessions
WHERE expires_at <= now();
