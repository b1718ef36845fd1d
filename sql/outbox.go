package sql

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"

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

// OutboxTopic is the watermill-sql topic (table watermill_outbox) that
// Watermill's forwarder drains to Kafka.
const OutboxTopic = "outbox"

// OutboxSchema is the watermill-sql schema of the outbox table.
func OutboxSchema() wmsql.SchemaAdapter { return wmsql.DefaultPostgreSQLSchema{} }

// OutboxOffsets is the watermill-sql offsets adapter of the outbox table.
func OutboxOffsets() wmsql.OffsetsAdapter { return wmsql.DefaultPostgreSQLOffsetsAdapter{} }

// InitOutbox creates the outbox table and its offsets table unless they
// exist, in one transaction, with watermill-sql's own statements: run with
// ctx, where the subscriber's SubscribeInitialize waits up to a minute
// whatever its caller's context.
func InitOutbox(ctx context.Context, pool *pgxpool.Pool) error {
	qs, err := OutboxSchema().SchemaInitializingQueries(wmsql.SchemaInitializingQueriesParams{Topic: OutboxTopic})
	if err != nil {
		return fmt.Errorf("create outbox table: %w", err)
	}
	offsets, err := OutboxOffsets().SchemaInitializingQueries(wmsql.OffsetsSchemaInitializingQueriesParams{Topic: OutboxTopic})
	if err != nil {
		return fmt.Errorf("create outbox table: %w", err)
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, q := range append(qs, offsets...) {
			if _, err := tx.Exec(ctx, q.Query, q.Args...); err != nil {
				return fmt.Errorf("create outbox table: %w", err)
			}
		}
		return nil
	})
}

// OutboxPending reports how many outbox messages the forwarder has not yet
// moved to Kafka.
func OutboxPending(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	n, _, err := OutboxBacklog(ctx, pool)
	return n, err
}

// PruneOutbox deletes outbox messages the forwarder has already moved to
// Kafka and that are older than keep, so the outbox table stays small. It
// returns how many it deleted.
func PruneOutbox(ctx context.Context, pool *pgxpool.Pool, keep time.Duration) (int64, error) {
	tag, err := pool.Exec(ctx, `DELETE FROM watermill_outbox m USING watermill_offsets_outbox o
		WHERE o.consumer_group = ''
		  AND (m.transaction_id < o.last_processed_transaction_id
		       OR (m.transaction_id = o.last_processed_transaction_id AND m."offset" <= o.offset_acked))
		  AND m.created_at < LOCALTIMESTAMP - $1::interval`, keep)
	if err != nil {
		return 0, fmt.Errorf("prune outbox: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Forwarder moves the anomaly messages committed to the outbox table to
// Kafka: Watermill's forwarder on a watermill-sql subscriber of the table.
type Forwarder struct {
	fwd  *forwarder.Forwarder
	pool *pgxpool.Pool
	cfg  ForwarderConfig
	// stop ends the outbox subscriber's polls, mid-query: only when the
	// forwarder is abandoned (its drain deadline), not on a graceful stop.
	stop context.CancelFunc
}

// closedNotCancelled is the outbox subscriber as the forwarder's router
// sees it: its polls run on ctx, not on the router's context. Closing
// Watermill's router cancels the subscription's context while it closes
// the subscriber; a poll cancelled mid-transaction loses its connection,
// and watermill-sql logs the failed commit as an error on every clean
// stop. Closed, the subscriber finishes the poll it is in and stops.
type closedNotCancelled struct {
	message.Subscriber
	ctx context.Context
}

func (s closedNotCancelled) Subscribe(_ context.Context, topic string) (<-chan *message.Message, error) {
	return s.Subscriber.Subscribe(s.ctx, topic)
}

// ForwarderConfig tunes a Forwarder.
type ForwarderConfig struct {
	// Poll is how often the table is polled (OUTBOX_POLL_INTERVAL).
	Poll time.Duration
	// ShutdownTimeout bounds the stop (SHUTDOWN_TIMEOUT): the forwarder
	// drains for at most half of it.
	ShutdownTimeout time.Duration
	Log             *slog.Logger
	WLog            watermill.LoggerAdapter
}

// NewForwarder creates the outbox tables unless they exist — before any
// handler writes to them inside a transaction, where they cannot be
// created — and returns a Forwarder publishing to pub.
func NewForwarder(ctx context.Context, pool *pgxpool.Pool, pub message.Publisher, cfg ForwarderConfig) (*Forwarder, error) {
	if err := InitOutbox(ctx, pool); err != nil {
		return nil, err
	}
	sub, err := wmsql.NewSubscriber(wmsql.BeginnerFromPgx(pool), wmsql.SubscriberConfig{
		SchemaAdapter:  OutboxSchema(),
		OffsetsAdapter: OutboxOffsets(),
		PollInterval:   cfg.Poll,
	}, cfg.WLog)
	if err != nil {
		return nil, fmt.Errorf("outbox subscriber: %w", err)
	}
	polls, stop := context.WithCancel(context.Background())
	fwd, err := forwarder.NewForwarder(closedNotCancelled{sub, polls}, newForwardedOnce(pub, cfg.Log), cfg.WLog,
		forwarder.Config{ForwarderTopic: OutboxTopic, CloseTimeout: cfg.ShutdownTimeout})
	if err != nil {
		stop()
		return nil, err
	}
	return &Forwarder{fwd: fwd, pool: pool, cfg: cfg, stop: stop}, nil
}

// Run forwards until ctx ends, and then on until writersDone is closed (no
// anomaly can be written any more: the router has stopped) and the outbox
// is empty, or half of ShutdownTimeout has passed. Stopping with ctx would
// cancel a batch already published to Kafka before its offset committed,
// and the next start would publish it again.
func (f *Forwarder) Run(ctx context.Context, writersDone <-chan struct{}) error {
	fctx, cancelRouter := context.WithCancel(context.WithoutCancel(ctx))
	cancel := func() { f.stop(); cancelRouter() } // abandoned, mid-poll if need be
	defer cancel()
	go func() {
		<-ctx.Done()
		deadline := time.After(f.cfg.ShutdownTimeout / 2)
		select {
		case <-writersDone:
		case <-deadline:
			cancel()
			return
		}
		poll := time.NewTicker(max(f.cfg.Poll, 5*time.Millisecond))
		defer poll.Stop()
		for {
			qctx, qcancel := context.WithTimeout(fctx, time.Second)
			n, err := OutboxPending(qctx, f.pool)
			qcancel()
			if err != nil {
				// PostgreSQL does not answer: a poll may hang as well, so
				// it is abandoned, not waited for.
				f.cfg.Log.Warn("outbox not drained before stopping", "err", err)
				cancel()
				return
			}
			if n == 0 {
				// Closed, not cancelled (closedNotCancelled).
				_ = f.fwd.Close()
				return
			}
			select {
			case <-poll.C:
			case <-deadline:
				f.cfg.Log.Warn("outbox not drained before stopping; the rest is forwarded on the next start", "pending", n)
				cancel()
				return
			}
		}
	}()
	return f.fwd.Run(fctx)
}
