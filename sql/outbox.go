package sql

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// outboxUnforwarded selects the outbox messages (m) the forwarder has not
// moved to Kafka yet. watermill-sql's forwarder (the empty consumer group) records in
// watermill_offsets_outbox the last (transaction_id, offset) it acknowledged
// and takes messages in that order; a message is forwarded when it sorts
// at or before that mark. Until the forwarder has acknowledged anything there
// is no offsets row, and every message is waiting. Only committed messages
// are visible here, so a message counts from the commit of its anomaly.
const outboxUnforwarded = `FROM watermill_outbox m
	LEFT JOIN watermill_offsets_outbox o ON o.consumer_group = ''
	WHERE o.consumer_group IS NULL
	   OR m.transaction_id > o.last_processed_transaction_id
	   OR (m.transaction_id = o.last_processed_transaction_id AND m."offset" > o.offset_acked)`

// OutboxBacklog reports the committed outbox messages the forwarder has not
// moved to Kafka: how many, and how long the oldest has waited (since its
// transaction began, which for an anomaly's short transaction is its
// commit; zero when none waits).
func OutboxBacklog(ctx context.Context, pool *pgxpool.Pool) (n int64, oldest time.Duration, err error) {
	var secs float64
	// created_at is a timestamp without time zone written as
	// CURRENT_TIMESTAMP, so it is compared with LOCALTIMESTAMP.
	err = pool.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM LOCALTIMESTAMP - min(m.created_at)), 0)::float8 `+
		outboxUnforwarded).Scan(&n, &secs)
	if err != nil {
		return 0, 0, fmt.Errorf("read the outbox backlog: %w", err)
	}
	return n, time.Duration(max(secs, 0) * float64(time.Second)), nil
}
