-- The webhook fan-out for recipients stored with a status other than `pending` (0005), as a row trigger
-- whose WHEN clause PostgreSQL evaluates itself: every recipient POST /queue stores is pending, so none
-- calls a function, fills a transition table or looks for an enabled endpoint. The statement trigger did
-- all three for every insert, about 0.045 ms of PostgreSQL's work on a single-message request (BENCHMARKS.md,
-- seventh round). A writer that does store final recipients (none in production) pays one call per row.
CREATE FUNCTION webhook_recipient_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NULL) THEN
        PERFORM webhook_enqueue(ARRAY[NEW.id]);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER recipients_webhook_fan_out_insert ON recipients;
DROP FUNCTION webhook_recipients_inserted();

CREATE TRIGGER recipients_webhook_fan_out_insert
    AFTER INSERT ON recipients
    FOR EACH ROW WHEN (NEW.status <> 'pending')
    EXECUTE FUNCTION webhook_recipient_inserted();
