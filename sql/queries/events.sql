-- record_mailjet_events --
-- Store new events (duplicates dropped), match them to their recipients, move those recipients' statuses forward
-- and suppress what must be: one call (migration 0034 has the function and why), its own transaction in
-- autocommit. `undated`: the sorted fingerprints of the events without a time of their own, locked first.
SELECT new_events, matched_events FROM mailer_record_events(%(events)s, %(undated)s::text[]);

-- apply_pending_events --
-- Match events that arrived before their message's send result was stored: the recipients of these jobs
-- (their months' partitions only, 0028).
UPDATE mailjet_events AS e
SET recipient_id = r.id, applied_at = now()
FROM recipients AS r
WHERE e.applied_at IS NULL
  AND e.message_id = ANY(%(message_ids)s)
  AND r.job_id = ANY(%(job_ids)s::uuid[])
  AND r.message_id = e.message_id
RETURNING e.id, e.recipient_id, r.job_id AS recipient_job_id;

-- advance_recipient_statuses --
-- Set each recipient to the highest-ranked status among its events, never to a lower one, and add the milestones
-- of all its events (migration 0045: an open applied with a later spam counts too). The rank of the current
-- status is a subquery (not a join) so a concurrent update is re-checked against the row's newest status.
-- `r.id = ANY(...)` lets the planner reach the recipients by their key: joined to `best` alone it hashes a
-- sequential scan of the whole recipients table. `r.job_id = ANY(...)`, the recipients' jobs, keeps that to their
-- months' partitions (0028).
UPDATE recipients AS r
SET status = CASE WHEN best.rank > (SELECT rank FROM recipient_statuses WHERE status = r.status)
                  THEN best.status ELSE r.status END,
    milestones = r.milestones | best.bits,
    updated_at = now()
FROM (
    SELECT DISTINCT ON (e.recipient_id) e.recipient_id, e.status, s.rank,
           bit_or(mailer_status_milestone_bits(e.status)) OVER (PARTITION BY e.recipient_id) AS bits
    FROM mailjet_events e
    JOIN recipient_statuses s ON s.status = e.status
    WHERE e.recipient_id = ANY(%(recipient_ids)s)
    ORDER BY e.recipient_id, s.rank DESC, e.occurred_at DESC
) AS best
WHERE r.id = best.recipient_id AND r.id = ANY(%(recipient_ids)s) AND r.job_id = ANY(%(job_ids)s::uuid[])
  AND (best.rank > (SELECT rank FROM recipient_statuses WHERE status = r.status) OR (best.bits & ~r.milestones) <> 0)
RETURNING r.id, r.job_id, r.email, r.status;

-- list_recipient_events --
-- The tracking timeline of every recipient of a job, oldest first.
SELECT e.recipient_id, e.status AS type, e.occurred_at AS at
FROM mailjet_events e
JOIN recipients r ON r.id = e.recipient_id
WHERE r.job_id = %(job_id)s AND e.status IS NOT NULL
ORDER BY e.occurred_at, e.id;
