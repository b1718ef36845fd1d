package sql

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heartbeat/heartbeat/messages"
)

// History answers, from heartbeat_events, what a customer's latest reading
// was before a given record of the raw topic. The detector uses it to
// rebuild a customer's state after a restart or a rebalance, so that its
// anomalies are the same as those of an uninterrupted run.
type History struct {
	pool *pgxpool.Pool
	// Window bounds how far back a previous reading is looked for.
	Window time.Duration
	// Wait bounds how long to wait for persist to store the readings before
	// the record; past it the lookup answers with what is stored.
	Wait time.Duration
	// progress returns the next offset the persist group has committed for
	// a partition: everything before it is stored.
	progress func(ctx context.Context, topic string, partition int32) (int64, error)

	mu     sync.Mutex
	stored map[messages.Source]int64 // highest offset known stored, by topic and partition (Offset zero)
}

// NewHistory reads history from pool, and how far it is complete from
// progress: the next offset persist's consumer group has committed for a
// partition (its offsets only pass contiguously stored records).
func NewHistory(pool *pgxpool.Pool, progress func(ctx context.Context, topic string, partition int32) (int64, error), window, wait time.Duration) *History {
	return &History{pool: pool, progress: progress, Window: window, Wait: wait, stored: map[messages.Source]int64{}}
}

// Previous returns the latest reading (by event time, then offset) of
// h.CustomerID stored from records of src's partition before src, no older
// than Window before h. found is false when there is none.
func (hs *History) Previous(ctx context.Context, h messages.Heartbeat, src messages.Source) (at time.Time, rate int, found bool, err error) {
	if err := hs.waitFor(ctx, src); err != nil {
		return at, 0, false, err
	}
	var r int16
	err = hs.pool.QueryRow(ctx, `SELECT event_time, heart_rate FROM heartbeat_events
		WHERE customer_id = $1 AND source_topic = $2 AND source_partition = $3 AND source_offset < $4 AND event_time >= $5
		ORDER BY event_time DESC, source_offset DESC LIMIT 1`,
		h.CustomerID, src.Topic, src.Partition, src.Offset, h.Timestamp.Add(-hs.Window)).Scan(&at, &r)
	if errors.Is(err, pgx.ErrNoRows) {
		return at, 0, false, nil
	}
	if err != nil {
		return at, 0, false, fmt.Errorf("look up previous reading of %s: %w", h.CustomerID, err)
	}
	return at, int(r), true, nil
}

// waitFor waits until persist has finished with every record of src's
// partition up to src (src is a valid reading, so persist stores it, and
// everything before it, eventually): until persist's committed offset has
// passed it. (Not ingest_checkpoint's highest stored offset: with several
// writers, that can run ahead of a batch still committing.)
func (hs *History) waitFor(ctx context.Context, src messages.Source) error {
	key := messages.Source{Topic: src.Topic, Partition: src.Partition}
	deadline := time.Now().Add(hs.Wait)
	for {
		hs.mu.Lock()
		cp, ok := hs.stored[key]
		hs.mu.Unlock()
		if ok && cp >= src.Offset {
			return nil
		}
		next, err := hs.progress(ctx, src.Topic, src.Partition)
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("read persist progress: %w", err)
		}
		hs.mu.Lock()
		hs.stored[key] = max(hs.stored[key], next-1)
		hs.mu.Unlock()
		if next-1 >= src.Offset {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w to %s/%d offset %d within %s", messages.ErrHistoryIncomplete, src.Topic, src.Partition, src.Offset, hs.Wait)
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
