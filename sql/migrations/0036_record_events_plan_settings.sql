-- mailer_record_events (0034) keeps its plans for the session. Two plans it could keep were far too dear:
--   * JIT: a session that plans it while a month partition holds many rows not yet analyzed (the first minutes of
--     a month, or autovacuum late) estimates above jit_above_cost and JIT-compiles on every call: 250–400 ms per
--     single-event POST instead of 1–3 (like every other function of ours: 0020, 0024, 0029).
--   * A sequential scan chosen while a month partition was empty (months are made ahead, empty): rows added
--     later do not make the plan over, so each event read the whole growing month, 25–47 ms an event at 200,000
--     recipients, until autovacuum's ANALYZE. Every table it reads has an index for each of its lookups.
-- The suppression it calls (rare) the same, JIT only.
ALTER FUNCTION mailer_record_events(jsonb, text[]) SET jit = off;
ALTER FUNCTION mailer_record_events(jsonb, text[]) SET enable_seqscan = off;
ALTER FUNCTION mailer_suppress_from_events(bigint[]) SET jit = off;
