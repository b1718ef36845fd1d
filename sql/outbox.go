package sql

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// OutboxBacklog reports the committed outbox messages the forwarder has not
// moved to Kafka: how many, and how long the oldest has waited (since its
// transaction began, which for an anomaly's short transaction is its
// commit; zero when none waits). Only committed messages are visible here.
//
// watermill-sql's forwarder (the empty consumer group) records in
// watermill_offsets_outbox the last (transaction_id, offset) it acknowledged
// and takes messages in that order, so the waiting ones sort after that
// mark; until it has acknowledged anything there is no mark and every message
// waits. The mark is read first and passed as a parameter, so that the count
// is an index range scan from it: joined in one statement, PostgreSQL cannot
// estimate the range and scans the whole outbox (240 ms over a million rows,
// against 0.02 ms).
func OutboxBacklog(ctx context.Context, pool *pgxpool.Pool) (n int64, oldest time.Duration, err error) {
	tx, offset := "0", int64(0) // before every message
	err = pool.QueryRow(ctx, `SELECT last_processed_transaction_id::text, coalesce(offset_acked, 0)
		FROM watermill_offsets_outbox WHERE consumer_group = ''`).Scan(&tx, &offset)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, fmt.Errorf("read the outbox forwarder's position: %w", err)
	}
	var secs float64
	// created_at is a timestamp without time zone written as
	// CURRENT_TIMESTAMP, so it is compared with LOCALTIMESTAMP.
	err = pool.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM LOCALTIMESTAMP - min(created_at)), 0)::float8
		FROM watermill_outbox
		WHERE transaction_id >= $1::xid8 AND (transaction_id, "offset") > ($1::xid8, $2)`, tx, offset).Scan(&n, &secs)
	if err != nil {
		return 0, 0, fmt.Errorf("read the outbox backlog: %w", err)
	}
	return n, time.Duration(max(secs, 0) * float64(time.Second)), nil
}
