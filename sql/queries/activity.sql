-- activity_page --
-- One page of GET /activity: the app's recipient status changes after the cursor (xid, id), oldest first, each
-- with its outbound webhook body (as webhook_enqueue builds it, migration 0044). Only changes whose transaction
-- ended before this statement's snapshot (xid below its xmin) are read: any writer still open, and any later
-- one, has an xid at or above it, so nothing can commit behind the page. The watermark comes back even on an
-- empty page (one row of NULLs then). The event detail is the recipient's latest Mailjet event of that status
-- received by the time of the change. Index recipient_activity_app_xid_idx.
WITH watermark AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
), page AS (
    SELECT a.*
    FROM recipient_activity a
    WHERE a.app_id = %(app_id)s
      AND (a.xid, a.id) > (%(after_xid)s::xid8, %(after_id)s::bigint)
      AND a.xid < (SELECT xmin FROM watermark)
      AND (%(types)s::text[] IS NULL OR a.status = ANY(%(types)s::text[]))
    ORDER BY a.xid, a.id
    LIMIT %(limit)s
)
SELECT w.xmin::text AS watermark, p.id, p.xid::text AS xid,
       CASE WHEN p.id IS NOT NULL THEN jsonb_build_object(
           'type', 'email.' || p.status,
           'timestamp', webhook_rfc3339(p.created_at),
           'data', jsonb_build_object(
               'job_id', p.job_id::text,
               'recipient', p.email,
               'message_id', p.message_id::text,
               'status', p.status,
               'metadata', (SELECT j.metadata FROM jobs j WHERE j.id = p.job_id),
               'event', coalesce(
                   (SELECT webhook_event_detail(me.status, me.occurred_at, me.name, me.payload)
                    FROM mailjet_events me
                    WHERE me.recipient_id = p.recipient_id AND me.status = p.status AND me.received_at <= p.created_at
                    ORDER BY me.occurred_at DESC, me.id DESC
                    LIMIT 1),
                   jsonb_build_object('type', p.status, 'at', webhook_rfc3339(p.created_at))
               )
           )
       ) END AS body
FROM watermark w
LEFT JOIN page p ON true
ORDER BY p.xid, p.id;
