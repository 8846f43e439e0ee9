-- Issue 18: a claim belongs to a sender whose liveness the database can see, instead of a time guess.
--
-- Each worker process registers a sender and holds, on a connection of its own, the session-level
-- advisory lock (SENDER_LOCK_NAMESPACE, id) (mailer/store/senders.py), renewing seen_at every second.
-- A claim records its sender in jobs.claimed_by. The takeover check (mailer/services/recovery.py) retires a
-- sender whose lock nobody holds and that has not been seen for the reconnect grace (dead), or whose
-- lock is held but that has not been seen for the lease (hung), and requeues the 'sending' jobs of retired
-- senders to be checked with Mailjet first. Claims made before this release have no claimed_by and are
-- still recovered by age (MAILER_SEND_STALLED_AFTER_S).
--
-- No index on jobs.claimed_by: only the takeover of a retired sender reads it, through jobs_sending_idx
-- (the jobs in flight), and the send path reads jobs by primary key (tests/integration/test_send_plans.py).
-- A nullable column without default is a catalog change only, however big the table.

CREATE TABLE senders (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    backend_pid     integer NOT NULL,       -- of the connection that holds its lock
    host            text NOT NULL,
    os_pid          integer NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    seen_at         timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz,
    retired_because text                    -- the takeover rule: 'dead' or 'hung'
);

ALTER TABLE jobs ADD COLUMN claimed_by integer;
