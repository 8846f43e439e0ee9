-- Issue 18: when the attempt whose outcome is unknown was made (the claim a takeover or an ambiguous error
-- ended), so that a lookup that does not find it yet can wait for Mailjet's listing delay before a resend
-- (MAILER_SEND_LISTING_DELAY_S, mailer/services/sending.py). Set with verify_before_send, cleared when the job
-- ends. A nullable column without default is a catalog change only, however big the table.
ALTER TABLE jobs ADD COLUMN lost_attempt_at timestamptz;
