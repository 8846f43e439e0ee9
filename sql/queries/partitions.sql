-- ensure_month_partitions --
-- Create the missing month partitions of `parent` from first_month to last_month (migration 0027).
SELECT mailer_ensure_month_partitions(%(parent)s::regclass, %(kind)s, %(first_month)s::date, %(last_month)s::date)
       AS created;

-- ensure_registered_partitions --
-- For every registered parent, the months from the one before `today` to `ahead` months after it; how many
-- were made and the parents that failed (each in its own subtransaction).
SELECT created, failed FROM mailer_ensure_registered_partitions(%(today)s::date, %(ahead)s::integer);

-- month_partitions --
-- A parent's month partitions, oldest first.
SELECT partition::text AS partition, month
FROM mailer_month_partitions(%(parent)s::regclass);

-- set_partition_lock_timeout --
-- How long this transaction's partition DDL may wait for its lock before giving up.
SELECT set_config('lock_timeout', %(lock_timeout)s, true) AS lock_timeout;

-- drop_month_partition --
-- Drop `month`'s partition of `parent`, if there is one.
SELECT mailer_drop_month_partition(%(parent)s::regclass, %(month)s::date) AS dropped;
