-- get_primary_wal_position --
-- How far the primary has written its WAL, in bytes from 0/0: a replica that has replayed as far has every
-- transaction the primary had committed when this was read (services/read_replica.py measures lag with it).
SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS written_bytes;

-- get_replica_position --
-- How far a streaming replica has received and replayed the primary's WAL, and how long ago the last
-- transaction it replayed committed. A server that is not in recovery answers in_recovery false and NULLs.
SELECT pg_is_in_recovery() AS in_recovery,
       (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint AS received_bytes,
       (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS replayed_bytes,
       EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_age_s;
