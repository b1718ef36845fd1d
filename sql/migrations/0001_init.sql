-- Heartbeat readings, one row per valid event. Column names follow the
-- original system's schema so its queries and dashboards keep working.
CREATE TABLE heartbeat_events (
    event_id         uuid        PRIMARY KEY,
    customer_id      varchar(64) NOT NULL,
    event_time       timestamptz NOT NULL,
    ingest_time      timestamptz NOT NULL DEFAULT now(),
    heart_rate       smallint    NOT NULL CHECK (heart_rate BETWEEN 0 AND 400),
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL
);
CREATE INDEX heartbeat_events_event_time_idx ON heartbeat_events (event_time);
CREATE INDEX heartbeat_events_customer_time_idx ON heartbeat_events (customer_id, event_time DESC);

-- How far storage has got, per consumer group and partition. Written in the
-- same transaction as the rows it covers.
CREATE TABLE ingest_checkpoint (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    last_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Detected anomalies. The row and the events.anomaly.v1 message are written
-- in one transaction (transactional outbox).
CREATE TABLE anomalies (
    anomaly_id   uuid        PRIMARY KEY,
    event_id     uuid        NOT NULL,
    customer_id  varchar(64) NOT NULL,
    anomaly_type text        NOT NULL,
    severity     text        NOT NULL,
    heart_rate   smallint    NOT NULL,
    event_time   timestamptz NOT NULL,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    details      jsonb       NOT NULL DEFAULT '{}',
    UNIQUE (event_id, anomaly_type)
);
CREATE INDEX anomalies_event_time_idx ON anomalies (event_time DESC);
CREATE INDEX anomalies_customer_time_idx ON anomalies (customer_id, event_time DESC);
