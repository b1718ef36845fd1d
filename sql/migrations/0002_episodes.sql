-- Episodes (DETECTION_MODE=episode): one anomalies row per episode, inserted
-- when it opens (status 'open') and updated once when it closes. Per-event
-- rows (DETECTION_MODE=per_event) leave these columns NULL. Adding nullable
-- columns without defaults rewrites nothing, however large the table.
ALTER TABLE anomalies
    ADD COLUMN status      text,
    ADD COLUMN started_at  timestamptz,
    ADD COLUMN opened_at   timestamptz,
    ADD COLUMN ended_at    timestamptz,
    ADD COLUMN peak_rate   smallint,
    ADD COLUMN trough_rate smallint,
    ADD COLUMN samples     integer,
    ADD COLUMN duration_ms bigint,
    ADD COLUMN closed_at   timestamptz;

-- NOT VALID: checked for new rows, without scanning the existing ones.
ALTER TABLE anomalies ADD CONSTRAINT anomalies_status_check
    CHECK (status IN ('open', 'closed')) NOT VALID;

-- The detector reloads a customer's open and recently ended episodes when
-- it rebuilds that customer's state.
CREATE INDEX anomalies_customer_episodes_idx ON anomalies (customer_id, ended_at)
    WHERE status IS NOT NULL;
