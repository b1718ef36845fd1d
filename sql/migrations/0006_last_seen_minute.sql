-- customer_last_seen keeps the minute of each customer's latest stored
-- reading, nothing finer (docs/performance.md, "The persist sink").
--
-- Its one reader, the Active customers panel, asks which customers were seen
-- in the last minutes; holding the exact time and rate of the latest reading
-- cost one update per customer and batch — at one reading a second and
-- batches of a few milliseconds, one per reading. Holding the minute, persist
-- writes a customer once a minute: it remembers which minute it last stored
-- for each customer and skips those already stored. A customer's exact
-- latest reading is still one index probe away, in customer_history
-- (customer_id, last_time).
--
-- last_minute stops being generated from last_event_time and keeps its
-- values; its index stays. The table is one row per customer: rewriting it
-- costs little.
ALTER TABLE customer_last_seen ALTER COLUMN last_minute DROP EXPRESSION;
ALTER TABLE customer_last_seen ALTER COLUMN last_minute SET NOT NULL;

-- A persist of the previous version still running beside this one (a
-- rolling upgrade) writes last_event_time and last_heart_rate and not
-- last_minute. The two columns stay, nullable and no longer written by this
-- version, until a later migration drops them; for the rows that version
-- writes, this trigger moves last_minute to the minute of last_event_time.
ALTER TABLE customer_last_seen ALTER COLUMN last_event_time DROP NOT NULL,
                               ALTER COLUMN last_heart_rate DROP NOT NULL;
CREATE FUNCTION heartbeat_last_seen_minute() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.last_minute := greatest(NEW.last_minute,
        date_bin('1 minute', NEW.last_event_time, timestamptz '2000-01-01 00:00:00+00'));
    RETURN NEW;
END $$;
CREATE TRIGGER customer_last_seen_previous_version
    BEFORE INSERT OR UPDATE OF last_event_time ON customer_last_seen
    FOR EACH ROW WHEN (NEW.last_event_time IS NOT NULL)
    EXECUTE FUNCTION heartbeat_last_seen_minute();

-- The minute moves forward once a minute at most, and every move changes
-- the indexed value: the free space kept for heap-only updates is not used.
ALTER TABLE customer_last_seen RESET (fillfactor);
