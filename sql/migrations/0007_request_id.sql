-- The request id (X-Request-Id, given or made up by the API) of the call that queued each job, so the
-- worker's log lines and webhook deliveries can be traced back to it. Jobs made by a schedule have none.
-- NOT VALID: the check holds for every new row without scanning the existing ones (all NULL anyway).
ALTER TABLE jobs
    ADD COLUMN request_id text,
    ADD CONSTRAINT jobs_request_id_check CHECK (request_id ~ '^[A-Za-z0-9._-]{1,128}$') NOT VALID;
