-- lock_migrations --
-- One migrator at a time, across machines; released when the session ends.
SELECT pg_advisory_lock(7243105911);

-- unlock_migrations --
-- Let the next migrator in.
SELECT pg_advisory_unlock(7243105911);

-- list_applied_migrations --
-- Names of everything applied so far.
SELECT name FROM mailer_migrations ORDER BY name;

-- record_migration --
-- Remember that a migration was applied.
INSERT INTO mailer_migrations (name) VALUES (%(name)s);

-- procrastinate_schema_exists --
-- Whether Procrastinate's tables are already there (e.g. installed by its own CLI).
SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present;
