-- recipient_addresses (0004) are written by the statement that accepts the jobs (sql/queries/jobs.sql,
-- insert_jobs), joined to that statement's own new jobs, and no longer by a trigger on recipients.
-- The trigger joined the inserted recipients to the jobs table and had to plan that join on every call
-- (EXECUTE): 0.2 ms, a sixth of PostgreSQL's CPU on a single-message POST /queue; and for a batch on a
-- jobs table of up to some 50,000 rows the planner chose to hash the whole table (a sequential scan of
-- jobs per batch, 14 ms at 20,000 jobs). A cached plan would be worse: made for a batch on a small table,
-- it would scan the table on every later single message of the session until the next ANALYZE.
-- insert_jobs is the only statement that inserts recipients (bulk loads that write recipients directly
-- fill recipient_addresses themselves: bench/history.py).
DROP TRIGGER recipient_addresses_on_insert ON recipients;
DROP FUNCTION recipient_addresses_add();
