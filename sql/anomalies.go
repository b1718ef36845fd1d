package sql

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heartbeat/heartbeat/messages"
)

// OutboxTopic is the watermill-sql topic (table watermill_outbox) that
// Watermill's forwarder drains to Kafka.
const OutboxTopic = "outbox"

const insertAnomaly = `INSERT INTO anomalies
	(anomaly_id, event_id, customer_id, anomaly_type, severity, heart_rate, event_time, detected_at, details)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
	ON CONFLICT DO NOTHING`

// AnomalyWriter stores anomalies and their outbox messages.
type AnomalyWriter struct {
	pool   *pgxpool.Pool
	logger watermill.LoggerAdapter
}

// NewAnomalyWriter returns a writer on pool.
func NewAnomalyWriter(pool *pgxpool.Pool, logger watermill.LoggerAdapter) *AnomalyWriter {
	return &AnomalyWriter{pool: pool, logger: logger}
}

// Write stores a and, in the same transaction, the message msg for topic in
// the outbox. An anomaly already stored (a redelivered event) writes
// nothing: it reports false, and no second message is queued.
func (w *AnomalyWriter) Write(ctx context.Context, a messages.Anomaly, topic string, msg *message.Message) (inserted bool, err error) {
	err = pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, insertAnomaly, a.AnomalyID, a.EventID, a.CustomerID, a.Type, a.Severity,
			int16(a.HeartRate), a.EventTime, a.DetectedAt, a.Details)
		if err != nil {
			return fmt.Errorf("insert anomaly: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		inserted = true
		pub, err := wmsql.NewPublisher(wmsql.TxFromPgx(tx), wmsql.PublisherConfig{SchemaAdapter: OutboxSchema()}, w.logger)
		if err != nil {
			return err
		}
		if err := forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: OutboxTopic}).Publish(topic, msg); err != nil {
			return fmt.Errorf("queue anomaly message: %w", err)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("record anomaly %s: %w", a.AnomalyID, err)
	}
	return inserted, nil
}

// OutboxSchema is the watermill-sql schema of the outbox table.
func OutboxSchema() wmsql.SchemaAdapter { return wmsql.DefaultPostgreSQLSchema{} }

// OutboxOffsets is the watermill-sql offsets adapter of the outbox table.
func OutboxOffsets() wmsql.OffsetsAdapter { return wmsql.DefaultPostgreSQLOffsetsAdapter{} }

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
