-- Partitions on demand: persist creates the daily partition of each day its
-- readings fall on, one day per transaction, instead of every day of
-- MAX_EVENT_AGE at start-up (thousands of partitions in one transaction ran
-- out of lock memory for a backfill of years).

-- heartbeat_ensure_partition creates the partition of heartbeat_events for
-- UTC day d unless it exists, and reports whether it created it. Creators
-- of several persist replicas are serialised by an advisory lock; one that
-- lost the race anyway sees duplicate_table and leaves the partition to the
-- winner. A relation of that name that is not a partition of
-- heartbeat_events is an error, not a partition to assume. CREATE TABLE
-- PARTITION OF locks heartbeat_events exclusively: lock_timeout bounds the
-- wait behind a long query, and persist retries (SQLSTATE 55P03). The
-- bounds cannot be query parameters: the name is formatted with %I, the
-- dates with %L.
CREATE FUNCTION heartbeat_ensure_partition(d date) RETURNS boolean
LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
DECLARE
    name text := 'heartbeat_events_p' || to_char(d, 'YYYYMMDD');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('heartbeat_ensure_partitions'));
    IF to_regclass(quote_ident(name)) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF heartbeat_events FOR VALUES FROM (%L) TO (%L)',
                           name, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            RETURN true;
        EXCEPTION WHEN duplicate_table THEN
            NULL; -- created meanwhile by another session
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_inherits
                   WHERE inhrelid = to_regclass(quote_ident(name)) AND inhparent = 'heartbeat_events'::regclass) THEN
        RAISE EXCEPTION 'relation % exists and is not a partition of heartbeat_events', name
            USING ERRCODE = 'duplicate_table', HINT = 'rename or drop it: heartbeat stores that day''s readings in it';
    END IF;
    RETURN false;
END $$;

-- Kept for a process of the previous version still running beside this
-- one: the same partitions, one day at a time.
CREATE OR REPLACE FUNCTION heartbeat_ensure_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE sql AS $$
    SELECT count(*) FILTER (WHERE heartbeat_ensure_partition(d::date))::integer
    FROM generate_series(first_day, last_day, interval '1 day') AS d
$$;

-- The default partition goes: a reading of a day without a partition now
-- fails (SQLSTATE 23514), and persist creates the partition and writes
-- again, instead of the reading landing where retention never drops it and
-- where it would stop its day's partition from ever being created. What it
-- holds moves to the partitions of its days.
CREATE TEMP TABLE heartbeat_events_moved ON COMMIT DROP AS SELECT * FROM heartbeat_events_default;
DROP TABLE heartbeat_events_default;
SELECT heartbeat_ensure_partition(d)
FROM (SELECT DISTINCT (event_time AT TIME ZONE 'UTC')::date AS d FROM heartbeat_events_moved) AS days;
INSERT INTO heartbeat_events SELECT * FROM heartbeat_events_moved;
