-- The size of a job's message as JSON text, written with the job, so the sender's claim can bound the bytes
-- of bodies one Mailjet call carries (MAILER_SEND_MAX_CALL_BYTES) without reading them. Jobs queued before
-- this migration have none: the claim measures theirs as it reads them (no rewrite of the table here).
ALTER TABLE jobs ADD COLUMN message_bytes integer;
