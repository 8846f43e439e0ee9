-- The domains an app may send from (`mailer apps create --from-domain`); null: any domain. Stored in the
-- one form they are compared in (mailer/domain/senders.py: lower case, IDNA, no trailing dot), so that
-- POST /queue's insert statement decides with a plain array containment (sql/queries/jobs.sql).
ALTER TABLE apps ADD COLUMN from_domains text[];
ALTER TABLE apps ADD CONSTRAINT apps_from_domains_check CHECK (
    from_domains IS NULL
    OR (cardinality(from_domains) > 0 AND array_position(from_domains, NULL) IS NULL
        AND from_domains::text = lower(from_domains::text))
);
