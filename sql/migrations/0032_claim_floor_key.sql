-- Issue 19: the send queue's index ends with the job's id, so that a claim can start its lane right after the
-- last job its process claimed, (run_at, id), even among the thousands of jobs one send_at makes due at once
-- (store/jobs.py, ClaimFloors): while a long snapshot pins the entries of claimed jobs, a claim that started
-- at their run_at would walk them all. The same partial index otherwise, built before the old one goes: it
-- reads the hot set (jobs_live, 0028) once and blocks writes to it meanwhile (0.6 s for 1,000,000 waiting jobs,
-- 411 MB, cached; the ended jobs of jobs_done are not read).
CREATE INDEX jobs_due_key_idx ON jobs_live ((priority = 'bulk'), run_at, id)
    WHERE status IN ('queued', 'scheduled');
DROP INDEX jobs_due_idx;
ALTER INDEX jobs_due_key_idx RENAME TO jobs_due_idx;
