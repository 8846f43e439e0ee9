-- Token buckets for rate limits that must hold across processes and machines: the per-app request
-- limit (key 'app:<id>') and the global cap on Mailjet calls (key 'mailjet').
-- UNLOGGED: no WAL for a row that changes on every request; after a crash the table comes back
-- empty, which only means every bucket starts full again.
-- fillfactor leaves room on each page so the constant updates stay HOT (no index churn).
CREATE UNLOGGED TABLE rate_limit_buckets (
    key         text CONSTRAINT rate_limit_buckets_pkey PRIMARY KEY,
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL,
    -- the outcome of the latest take, read back by its RETURNING (PostgreSQL before 18 cannot
    -- return the row as it was before an ON CONFLICT update)
    granted     boolean NOT NULL,
    CONSTRAINT rate_limit_buckets_tokens_check CHECK (tokens >= 0)
) WITH (fillfactor = 50);
