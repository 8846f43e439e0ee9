-- Month partitions for history (issue 19): the tables of years of mail are PARTITION BY RANGE on a time (or
-- on a job id: UUIDv7, whose leading 48 bits are the Unix milliseconds it was made), one partition per
-- calendar month (UTC), named <parent>_pYYYYMM. Housekeeping creates months ahead; retention drops whole months.
-- All DDL is done here, in functions, so that no Python formats SQL.

-- The parents kept in month partitions, and how their partition key reads a time.
CREATE TABLE month_partitioned_tables (
    parent  regclass CONSTRAINT month_partitioned_tables_pkey PRIMARY KEY,
    kind    text NOT NULL CONSTRAINT month_partitioned_tables_kind_check CHECK (kind IN ('uuid7', 'time'))
);

-- The lower bound of `month` (00:00 UTC of its first day) as a literal of the partition key's type.
CREATE FUNCTION mailer_month_bound(kind text, month date) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    start timestamptz := date_trunc('month', month)::timestamp AT TIME ZONE 'UTC';
    hex text;
BEGIN
    IF kind = 'time' THEN
        RETURN to_char(start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"');
    ELSIF kind = 'uuid7' THEN
        -- 48 bits of Unix milliseconds, then zeros: the smallest UUIDv7 made in that millisecond.
        hex := lpad(to_hex((extract(epoch FROM start) * 1000)::bigint), 12, '0');
        RETURN substr(hex, 1, 8) || '-' || substr(hex, 9, 4) || '-0000-0000-000000000000';
    END IF;
    RAISE EXCEPTION 'unknown partition kind %', kind USING ERRCODE = 'invalid_parameter_value';
END;
$$;

-- A parent's month partitions (by their _pYYYYMM name), oldest first; a DEFAULT partition is not one.
CREATE FUNCTION mailer_month_partitions(parent regclass) RETURNS TABLE (partition regclass, month date)
LANGUAGE sql STABLE AS $$
    SELECT c.oid::regclass, to_date(substring(c.relname FROM '_p([0-9]{6})$'), 'YYYYMM')
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent AND c.relname ~ '_p[0-9]{6}$'
    ORDER BY 2;
$$;

-- Create each missing month partition of `parent` from first_month to last_month; how many it created.
-- When the parent's DEFAULT partition already holds rows of a month being made (jobs stored with random,
-- version 4 ids before UUIDv7 fall in any month), PostgreSQL refuses CREATE TABLE ... PARTITION OF; the month
-- is then made as a table of its own, those rows moved into it out of the default, and the table attached.
-- Waits for locks as long as the caller's lock_timeout allows.
CREATE FUNCTION mailer_ensure_month_partitions(parent regclass, kind text, first_month date, last_month date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    parent_name text;
    parent_schema text;
    key_column text;
    default_part regclass;
    month date := date_trunc('month', first_month)::date;
    name text;
    low text;
    high text;
    strays boolean;
    retention text;
    created integer := 0;
BEGIN
    SELECT c.relname, n.nspname, a.attname, nullif(p.partdefid, 0)::regclass
    INTO parent_name, parent_schema, key_column, default_part
    FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    JOIN pg_partitioned_table AS p ON p.partrelid = c.oid
    JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = p.partattrs[0]
    WHERE c.oid = parent;
    WHILE month <= last_month LOOP
        name := parent_name || '_p' || to_char(month, 'YYYYMM');
        IF to_regclass(format('%I.%I', parent_schema, name)) IS NULL THEN
            low := mailer_month_bound(kind, month);
            high := mailer_month_bound(kind, (month + interval '1 month')::date);
            strays := false;
            IF default_part IS NOT NULL THEN
                EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE %I >= %L AND %I < %L)',
                               default_part, key_column, low, key_column, high) INTO strays;
            END IF;
            IF strays THEN
                EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)',
                               parent_schema, name, parent);
                -- job_events is append-only except for retention's deletes (0008); this move is one of those.
                retention := current_setting('mailer.retention', true);
                PERFORM set_config('mailer.retention', 'on', true);
                EXECUTE format('WITH moved AS (DELETE FROM %s WHERE %I >= %L AND %I < %L RETURNING *) '
                               'INSERT INTO %I.%I SELECT * FROM moved',
                               default_part, key_column, low, key_column, high, parent_schema, name);
                PERFORM set_config('mailer.retention', coalesce(retention, ''), true);
                EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                               parent, parent_schema, name, low, high);
            ELSE
                EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                               parent_schema, name, parent, low, high);
            END IF;
            created := created + 1;
        END IF;
        month := (month + interval '1 month')::date;
    END LOOP;
    RETURN created;
END;
$$;

-- For every registered parent, the months from the one before `today` to `ahead` months after it: how many
-- were made, and the parents that failed. Each parent in a subtransaction of its own, so that one (a lock
-- not granted in time, say) does not stop the others; each failure is also raised as a WARNING.
CREATE FUNCTION mailer_ensure_registered_partitions(today date, ahead integer, OUT created integer, OUT failed text[])
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    created := 0;
    failed := '{}';
    FOR t IN SELECT parent, kind FROM month_partitioned_tables ORDER BY parent::text LOOP
        BEGIN
            created := created + mailer_ensure_month_partitions(
                t.parent, t.kind, (date_trunc('month', today) - interval '1 month')::date,
                (date_trunc('month', today) + make_interval(months => ahead))::date);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'month partitions of % not made: % (SQLSTATE %)', t.parent, SQLERRM, SQLSTATE;
            failed := failed || t.parent::text;
        END;
    END LOOP;
END;
$$;

-- Drop `month`'s partition of `parent` if there is one; whether it did. (The caller sets lock_timeout:
-- DROP takes an ACCESS EXCLUSIVE lock on the parent, so it must give up rather than queue behind readers.)
CREATE FUNCTION mailer_drop_month_partition(parent regclass, month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    doomed regclass;
BEGIN
    SELECT p.partition INTO doomed FROM mailer_month_partitions(parent) AS p WHERE p.month = date_trunc('month', $2);
    IF doomed IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %s', doomed);
    RETURN true;
END;
$$;
