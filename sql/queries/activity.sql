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

-- activity_recent --
-- The dashboard's activity page: the app's recipient status changes newest first (the feed's order, (xid, id),
-- backwards) before the keyset position, of these statuses. At most `scan_limit` changes are read (index
-- recipient_activity_app_xid_idx backwards), whichever their status, so a rare type costs a bounded read per
-- page; each row also carries how many were read and the oldest of them, where the next page goes on from. No
-- row at all when there is nothing before the position.
WITH scanned AS MATERIALIZED (
    SELECT a.id, a.xid, a.created_at, a.status, a.email, a.job_id
    FROM recipient_activity a
    WHERE a.app_id = %(app_id)s AND (a.xid, a.id) < (%(before_xid)s::xid8, %(before_id)s::bigint)
    ORDER BY a.xid DESC, a.id DESC
    LIMIT %(scan_limit)s
), edge AS (
    SELECT s.xid, s.id, (SELECT count(*) FROM scanned) AS scanned FROM scanned s ORDER BY s.xid, s.id LIMIT 1
), page AS (
    SELECT s.* FROM scanned s
    WHERE %(types)s::text[] IS NULL OR s.status = ANY(%(types)s::text[])
    ORDER BY s.xid DESC, s.id DESC
    LIMIT %(limit)s
)
SELECT e.scanned, e.xid::text AS edge_xid, e.id AS edge_id,
       p.id, p.xid::text AS xid, p.created_at, p.status, p.email, p.job_id
FROM edge e
LEFT JOIN page p ON true
ORDER BY p.xid DESC, p.id DESC;
