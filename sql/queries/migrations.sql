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

-- plan_procrastinate_fetch_by_index --
-- Procrastinate's fetch function plans its query once per connection. Planned while procrastinate_jobs
-- looked empty, as it usually is (finished wake-ups are deleted), the plan scans the whole table once per
-- waiting job: quadratic in the jobs waiting, 24 ms per fetch with the 400 wake-ups of a 20,000-email
-- burst (BENCHMARKS.md, fourth round). With sequential scans off for that function it walks Procrastinate's
-- own indexes whatever the statistics say (about 1 ms per fetch with 400 waiting or 50,000). Applied after
-- every migrate: a Procrastinate upgrade that replaces the function would drop the setting.
ALTER FUNCTION procrastinate_fetch_job_v2(character varying[], bigint) SET enable_seqscan = off;

-- set_migration_lock_timeout --
-- How long this migration's transaction may wait for any lock (SET LOCAL: this transaction only).
SELECT set_config('lock_timeout', %(timeout)s, true);
