-- Scale: heartbeat_events partitioned by day of event_time, so retention
-- drops whole partitions; per-minute rollups maintained on ingest, so the
-- dashboard's panels read thousands of rows instead of billions.

ALTER TABLE heartbeat_events RENAME TO heartbeat_events_unpartitioned;
ALTER INDEX heartbeat_events_event_time_idx RENAME TO heartbeat_events_unpartitioned_event_time_idx;
ALTER INDEX heartbeat_events_customer_time_idx RENAME TO heartbeat_events_unpartitioned_customer_time_idx;
ALTER TABLE heartbeat_events_unpartitioned RENAME CONSTRAINT heartbeat_events_pkey TO heartbeat_events_unpartitioned_pkey;

-- The key includes event_time, as partitioning requires: a redelivered
-- reading has the same event_id and event_time, so it still conflicts.
CREATE TABLE heartbeat_events (
    event_id         uuid        NOT NULL,
    customer_id      varchar(64) NOT NULL,
    event_time       timestamptz NOT NULL,
    ingest_time      timestamptz NOT NULL DEFAULT now(),
    heart_rate       smallint    NOT NULL CHECK (heart_rate BETWEEN 0 AND 400),
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    PRIMARY KEY (event_id, event_time)
) PARTITION BY RANGE (event_time);
CREATE INDEX heartbeat_events_event_time_idx ON heartbeat_events (event_time);
CREATE INDEX heartbeat_events_customer_time_idx ON heartbeat_events (customer_id, event_time DESC);
-- Catches readings outside the daily partitions (only possible with a very
-- large MAX_EVENT_AGE); the service creates daily partitions ahead of time.
CREATE TABLE heartbeat_events_default PARTITION OF heartbeat_events DEFAULT;

-- heartbeat_ensure_partitions creates the missing daily partitions (UTC days)
-- of [first_day, last_day], skipping a day whose readings already sit in the
-- default partition. Partition bounds cannot be query parameters: the
-- dates are formatted with %L, the names with %I.
CREATE FUNCTION heartbeat_ensure_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    created integer := 0;
    name text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('heartbeat_ensure_partitions'));
    FOR d IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        name := 'heartbeat_events_p' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        CONTINUE WHEN EXISTS (SELECT 1 FROM heartbeat_events_default
                              WHERE event_time >= d::timestamp AT TIME ZONE 'UTC'
                                AND event_time < (d + 1)::timestamp AT TIME ZONE 'UTC');
        EXECUTE format('CREATE TABLE %I PARTITION OF heartbeat_events FOR VALUES FROM (%L) TO (%L)',
                       name, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;

-- heartbeat_drop_partitions drops the daily partitions wholly before
-- first_kept (retention) and returns their names.
CREATE FUNCTION heartbeat_drop_partitions(first_kept date) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'heartbeat_events'::regclass
               AND c.relname ~ '^heartbeat_events_p[0-9]{8}$'
               AND to_date(substr(c.relname, 19), 'YYYYMMDD') < first_kept LOOP
        EXECUTE format('DROP TABLE %I', p.relname);
        RETURN NEXT p.relname;
    END LOOP;
END $$;

-- Readings per minute and heart rate: counts, sums and exact percentiles
-- of any window of whole minutes.
CREATE TABLE heartbeat_minute_rates (
    minute     timestamptz NOT NULL,
    heart_rate smallint    NOT NULL,
    events     bigint      NOT NULL,
    PRIMARY KEY (minute, heart_rate)
);

-- Each customer's latest reading: active customers without scanning readings.
CREATE TABLE customer_last_seen (
    customer_id     varchar(64) PRIMARY KEY,
    last_event_time timestamptz NOT NULL,
    last_heart_rate smallint    NOT NULL
);
CREATE INDEX customer_last_seen_time_idx ON customer_last_seen (last_event_time);

-- Move what the unpartitioned table held.
SELECT heartbeat_ensure_partitions((min(event_time) AT TIME ZONE 'UTC')::date, (max(event_time) AT TIME ZONE 'UTC')::date)
FROM heartbeat_events_unpartitioned HAVING count(*) > 0;
INSERT INTO heartbeat_events SELECT * FROM heartbeat_events_unpartitioned;
INSERT INTO heartbeat_minute_rates
SELECT date_trunc('minute', event_time), heart_rate, count(*) FROM heartbeat_events GROUP BY 1, 2;
INSERT INTO customer_last_seen
SELECT DISTINCT ON (customer_id) customer_id, event_time, heart_rate FROM heartbeat_events
ORDER BY customer_id, event_time DESC;
DROP TABLE heartbeat_events_unpartitioned;
