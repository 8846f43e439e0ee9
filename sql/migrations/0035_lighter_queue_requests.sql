-- A web process takes its apps' request tokens a few at a time (services/rate_limits.py, RequestLeases):
-- how many the latest lease_rate_limit_tokens took, read back by its RETURNING (PostgreSQL before 18 cannot
-- return the row as it was before an ON CONFLICT update). A constant default: no rewrite of the table.
ALTER TABLE rate_limit_buckets ADD COLUMN taken double precision NOT NULL DEFAULT 0;

-- jobs_ids_unique (0028) checks each accepted job's id against jobs_done, in PL/pgSQL, whose plan a session
-- keeps until an ANALYZE invalidates it. Made while jobs_done looked empty (a new installation, tables emptied
-- and analyzed), that plan read the whole month partition for every POST /queue on the connection afterwards:
-- 65 heap blocks per job after 2,000 ended jobs (tests/integration/test_send_plans.py), 148 buffers in the
-- steady benchmark. Turning sequential scans off is not enough (a full scan of an index, filtered by the join,
-- or of the other index that holds id, costs the same to a planner that sees no rows). A LATERAL subquery with
-- a LIMIT is run for each new id (it cannot become a join), so that the id's month partition alone is read
-- (run-time pruning on both bounds), and ordered by id, which the primary key gives and no other index does.
CREATE OR REPLACE FUNCTION jobs_ids_unique() RETURNS trigger
LANGUAGE plpgsql SET enable_hashjoin TO off SET enable_mergejoin TO off SET enable_seqscan TO off AS $$
BEGIN
    IF EXISTS (SELECT FROM inserted_jobs AS n
               CROSS JOIN LATERAL (SELECT FROM jobs_done AS d WHERE d.id >= n.id AND d.id <= n.id
                                   ORDER BY d.id LIMIT 1) AS done
               WHERE n.status IN ('scheduled', 'queued', 'sending')) THEN
        RAISE EXCEPTION 'a job with this id exists already' USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$;
