-- Test mode (issue 21): a test app goes through every step of a live one except the Mailjet call, which the
-- worker answers itself (mailer/mailjet/simulation.py). The flag is set at creation and never changes, so a
-- job's app says whether it is a test job: no column on jobs. NOT NULL DEFAULT false: the default is a
-- constant, so adding the column rewrites nothing (the apps of an installation are few in any case).
ALTER TABLE apps ADD COLUMN test boolean NOT NULL DEFAULT false;
