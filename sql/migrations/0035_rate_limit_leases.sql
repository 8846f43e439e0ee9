-- A web process takes its apps' request tokens a few at a time (services/rate_limits.py, RequestLeases):
-- how many the latest lease_rate_limit_tokens took, read back by its RETURNING (PostgreSQL before 18 cannot
-- return the row as it was before an ON CONFLICT update). A constant default: no rewrite of the table.
ALTER TABLE rate_limit_buckets ADD COLUMN taken double precision NOT NULL DEFAULT 0;
