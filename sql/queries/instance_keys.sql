-- get_or_create_instance_key --
-- The key named `name`, stored as `key` if there was none. A process that loses a race to create it
-- finds no row here (its snapshot predates the winner's commit) and asks again.
WITH created AS (
    INSERT INTO instance_keys (name, key)
    VALUES (%(name)s, %(key)s)
    ON CONFLICT ON CONSTRAINT instance_keys_pkey DO NOTHING
    RETURNING key
)
SELECT key FROM created
UNION ALL
SELECT key FROM instance_keys WHERE name = %(name)s
LIMIT 1;
