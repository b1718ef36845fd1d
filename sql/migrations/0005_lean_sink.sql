-- A leaner write per reading (docs/performance.md, "The persist sink").
-- heartbeat_events keeps one B-tree instead of three, and the detector's
-- history of a customer moves into customer_history: one row per customer
-- and batch instead of one index entry per reading.
--
-- On an existing database this migration rebuilds the primary key of every
-- partition and copies every stored reading into customer_history, in one
-- transaction that holds heartbeat_events exclusively: about as long as a
-- CREATE INDEX over all the readings plus one pass over them (measured in
-- docs/performance.md). persist and detect wait for it at start-up.

-- The key leads with event_time: readings arrive in about time order, so
-- new keys go to the rightmost leaf page (PostgreSQL's fast path) instead
-- of a random place for a random UUID. It holds the same pairs, so a
-- redelivered or replayed reading (same event_id and event_time) still
-- conflicts, and it serves ranges of event_time, which the separate
-- event_time index did.
ALTER TABLE heartbeat_events DROP CONSTRAINT heartbeat_events_pkey;
ALTER TABLE heartbeat_events ADD CONSTRAINT heartbeat_events_pkey PRIMARY KEY (event_time, event_id);
DROP INDEX heartbeat_events_event_time_idx;
-- Its one reader, the detector's rebuild of a customer's state, reads
-- customer_history now.
DROP INDEX heartbeat_events_customer_time_idx;

-- Each customer's readings as persist stored them, one row per batch, source
-- partition and UTC day: what the detector rebuilds a customer's state from.
-- readings packs them in offset order, 34 bytes each, big-endian: the event
-- id (16 bytes), event_time in microseconds since 1970 (8), heart_rate (2),
-- source_offset (8). Written in the same transaction and for the same rows
-- as heartbeat_events (new rows only), so the two always agree; partitioned
-- by the day of first_time like heartbeat_events, created and dropped with
-- it.
-- customer_id compares bytewise (COLLATE "C"): its index is searched and
-- extended once per customer and batch, and the database's collation
-- would compare through the C library; equality is the same either way.
CREATE TABLE customer_history (
    customer_id      varchar(64) COLLATE "C" NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    first_time       timestamptz NOT NULL,
    last_time        timestamptz NOT NULL,
    first_offset     bigint      NOT NULL,
    last_offset      bigint      NOT NULL,
    readings         bytea       NOT NULL CHECK (length(readings) % 34 = 0 AND length(readings) > 0)
) PARTITION BY RANGE (first_time);
-- Random event ids do not compress: spare PostgreSQL the attempt on rows
-- over 2 kB.
ALTER TABLE customer_history ALTER COLUMN readings SET STORAGE EXTERNAL;
CREATE INDEX customer_history_customer_time_idx ON customer_history (customer_id, last_time);

-- heartbeat_ensure_partition now creates the day's partition of both
-- tables, each unless it exists, and reports whether it created either.
CREATE OR REPLACE FUNCTION heartbeat_ensure_partition(d date) RETURNS boolean
LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
DECLARE
    parent text;
    name text;
    created boolean := false;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('heartbeat_ensure_partitions'));
    FOREACH parent IN ARRAY ARRAY['heartbeat_events', 'customer_history'] LOOP
        name := parent || '_p' || to_char(d, 'YYYYMMDD');
        IF to_regclass(quote_ident(name)) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               name, parent, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
                created := true;
                CONTINUE;
            EXCEPTION WHEN duplicate_table THEN
                NULL; -- created meanwhile by another session
            END;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_inherits
                       WHERE inhrelid = to_regclass(quote_ident(name)) AND inhparent = parent::regclass) THEN
            RAISE EXCEPTION 'relation % exists and is not a partition of %', name, parent
                USING ERRCODE = 'duplicate_table', HINT = 'rename or drop it: heartbeat stores that day''s readings in it';
        END IF;
    END LOOP;
    RETURN created;
END $$;

-- heartbeat_drop_partitions drops the daily partitions of both tables
-- wholly before first_kept and returns their names.
CREATE OR REPLACE FUNCTION heartbeat_drop_partitions(first_kept date) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent IN ('heartbeat_events'::regclass, 'customer_history'::regclass)
               AND c.relname ~ '_p[0-9]{8}$'
               AND to_date(right(c.relname, 8), 'YYYYMMDD') < first_kept
             ORDER BY c.relname LOOP
        EXECUTE format('DROP TABLE %I', p.relname);
        RETURN NEXT p.relname;
    END LOOP;
END $$;

-- The history of the readings stored so far, one row per customer, source
-- partition and minute of event_time (this migration cannot know which
-- readings were a batch).
SELECT heartbeat_ensure_partition(to_date(right(c.relname, 8), 'YYYYMMDD'))
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'heartbeat_events'::regclass AND c.relname ~ '^heartbeat_events_p[0-9]{8}$';
INSERT INTO customer_history
SELECT customer_id, source_topic, source_partition, min(event_time), max(event_time), min(source_offset), max(source_offset),
       string_agg(uuid_send(event_id) || int8send((extract(epoch FROM event_time) * 1000000)::bigint)
                  || int2send(heart_rate) || int8send(source_offset), ''::bytea ORDER BY source_offset)
FROM heartbeat_events
GROUP BY customer_id, source_topic, source_partition, date_trunc('minute', event_time);

-- customer_last_seen is updated for every customer of every batch. Indexed
-- on last_event_time, each update wrote two index entries besides the row;
-- indexed on the minute of it, the update of a customer seen in the same
-- minute changes no indexed value and is a heap-only (HOT) update, which
-- the free space fillfactor leaves on each page makes room for. Active
-- customers are found by the minute, then filtered by the exact time. A
-- small table (one row per customer): rewriting it costs little.
ALTER TABLE customer_last_seen SET (fillfactor = 70);
ALTER TABLE customer_last_seen ADD COLUMN last_minute timestamptz
    GENERATED ALWAYS AS (date_bin('1 minute', last_event_time, timestamptz '2000-01-01 00:00:00+00')) STORED;
DROP INDEX customer_last_seen_time_idx;
CREATE INDEX customer_last_seen_minute_idx ON customer_last_seen (last_minute);
