-- Test mode (issue 21): a test app goes through every step of a live one except the Mailjet call, which the
-- worker answers itself (mailer/mailjet/simulation.py). The flag is set at creation and never changes, so a
-- job's app says whether it is a test job: no column on jobs. NOT NULL DEFAULT false: the default is a
-- constant, so adding the column rewrites nothing (the apps of an installation are few in any case).
ALTER TABLE apps ADD COLUMN test boolean NOT NULL DEFAULT false;

-- Nothing else enforces "never changes": a test app may name real addresses (any other address behaves as
-- delivered), so `UPDATE apps SET test = false` would send its queued test jobs for real, and the other way
-- round a live app's jobs would stop reaching Mailjet. Refused whoever tries.
CREATE FUNCTION apps_test_is_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'app %: test mode is set when an app is created and never changes', OLD.name
        USING ERRCODE = 'check_violation';
END
$$;

CREATE TRIGGER apps_test_is_fixed
    BEFORE UPDATE OF test ON apps
    FOR EACH ROW WHEN (OLD.test IS DISTINCT FROM NEW.test)
    EXECUTE FUNCTION apps_test_is_fixed();
