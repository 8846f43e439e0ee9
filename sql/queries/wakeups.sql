-- wake_senders --
-- Defer the send jobs for due email (a lane and a wake-up time per email, null: now) in the open
-- transaction; how many were deferred.
SELECT mailer_wake_senders(%(lanes)s::integer[], %(wake_ats)s::timestamptz[], %(batch_size)s, %(queue)s, %(task)s)
    AS deferred;

-- await_wakers --
-- A sender's barrier (sql/migrations/0015): returns once every transaction that may have counted on a
-- wake-up now running has ended; LockNotAvailable after 500 ms. Run it alone, in autocommit.
SELECT mailer_await_wakers();
