-- take_rate_limit_tokens --
-- Refill a token bucket for the time since its last take (capped at the burst), then take `cost`
-- tokens only if that many are there; whether they were granted and, if not, the seconds until they
-- would be. A new bucket starts full. One statement, so concurrent takes serialize on the row lock.
INSERT INTO rate_limit_buckets AS bucket (key, tokens, updated_at, granted)
VALUES (%(key)s, %(burst)s - %(cost)s, clock_timestamp(), true)
ON CONFLICT ON CONSTRAINT rate_limit_buckets_pkey DO UPDATE
SET (tokens, granted) = (
        SELECT CASE WHEN refill.tokens >= %(cost)s THEN refill.tokens - %(cost)s ELSE refill.tokens END,
               refill.tokens >= %(cost)s
        FROM (
            SELECT least(%(burst)s, bucket.tokens + %(rate)s * greatest(
                       0, extract(epoch FROM excluded.updated_at - bucket.updated_at)::double precision
                   )) AS tokens
        ) AS refill
    ),
    -- excluded.updated_at is this statement's one clock reading (taken before any wait for the row
    -- lock); greatest() keeps the bucket's clock from moving back, so no interval is credited twice.
    updated_at = greatest(bucket.updated_at, excluded.updated_at)
RETURNING granted,
          CASE WHEN granted THEN 0 ELSE (%(cost)s - tokens) / %(rate)s END AS retry_after_s;

-- delete_idle_rate_limit_buckets --
-- Buckets whose keys start with `prefix` and that nobody has taken from for `idle_s` seconds (by then
-- full again, the same as no row): per-address buckets would otherwise pile up one row per address.
DELETE FROM rate_limit_buckets
WHERE starts_with(key, %(prefix)s)
  AND updated_at < clock_timestamp() - make_interval(secs => %(idle_s)s);

-- peek_rate_limit_tokens --
-- Whether bucket `key` has `cost` tokens now, without taking any: the seconds until it would have them
-- (0: now). No row means a full bucket, hence no row back.
SELECT greatest(0, (%(cost)s - least(%(burst)s, tokens + %(rate)s * greatest(
           0, extract(epoch FROM clock_timestamp() - updated_at)::double precision
       ))) / %(rate)s) AS retry_after_s
FROM rate_limit_buckets
WHERE key = %(key)s;

-- lease_rate_limit_tokens --
-- take_rate_limit_tokens for a process that takes tokens ahead of its requests: it first gives back the
-- `returned` tokens of its last lease that it never used (the bucket still capped at the burst), then takes
-- up to `want` whole tokens, as many as are there; `taken` says how many (0: none, and then the seconds until
-- one is there). A new bucket starts full. One statement, so concurrent takes serialize on the row lock.
INSERT INTO rate_limit_buckets AS bucket (key, tokens, updated_at, granted, taken)
VALUES (%(key)s, %(burst)s - least(%(want)s, floor(%(burst)s)), clock_timestamp(), true,
        least(%(want)s, floor(%(burst)s)))
ON CONFLICT ON CONSTRAINT rate_limit_buckets_pkey DO UPDATE
SET (tokens, granted, taken) = (
        SELECT refill.tokens - least(%(want)s, floor(refill.tokens)), refill.tokens >= 1,
               least(%(want)s, floor(refill.tokens))
        FROM (
            SELECT least(%(burst)s, bucket.tokens + %(returned)s + %(rate)s * greatest(
                       0, extract(epoch FROM excluded.updated_at - bucket.updated_at)::double precision
                   )) AS tokens
        ) AS refill
    ),
    -- as in take_rate_limit_tokens: one clock reading, and the bucket's clock never moves back
    updated_at = greatest(bucket.updated_at, excluded.updated_at)
RETURNING taken, CASE WHEN granted THEN 0 ELSE (1 - tokens) / %(rate)s END AS retry_after_s;
