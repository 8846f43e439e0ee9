-- Keys an installation makes for itself when the environment gives none (the dashboard's session key,
-- the webhook secrets' encryption key): one row per purpose, made once by whichever process asks first,
-- so every process on every machine uses the same one.
CREATE TABLE instance_keys (
    name       text        CONSTRAINT instance_keys_pkey PRIMARY KEY,
    key        bytea       NOT NULL CONSTRAINT instance_keys_key_length CHECK (octet_length(key) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
