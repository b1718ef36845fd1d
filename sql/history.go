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
	// group is the persist consumer group, whose checkpoint says how far
	// heartbeat_events is complete.
	group string
	// Window bounds how far back a previous reading is looked for.
	Window time.Duration
	// Wait bounds how long to wait for persist to store the readings before
	// the record; past it the lookup answers with what is stored.
	Wait time.Duration
	// Progress, when set, returns the next offset the persist group has
	// committed for a partition: everything before it is stored.
	Progress func(ctx context.Context, topic string, partition int32) (int64, error)

	mu          sync.Mutex
	checkpoints map[messages.Source]int64 // keyed by topic and partition, Offset zero
}

// NewHistory reads history from pool, completeness from persist group group.
func NewHistory(pool *pgxpool.Pool, group string, window, wait time.Duration) *History {
	return &History{pool: pool, group: group, Window: window, Wait: wait, checkpoints: map[messages.Source]int64{}}
}

// ErrHistoryIncomplete is wrapped in Previous's error when persist has not
// stored the records before src within Wait.
var ErrHistoryIncomplete = errors.New("persist has not caught up")

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
// everything before it, eventually). With Progress set, that is the persist
// group's committed offset, which only passes contiguously stored records;
// otherwise the stored checkpoint, which with several writers can run ahead
// of a batch still committing.
func (hs *History) waitFor(ctx context.Context, src messages.Source) error {
	key := messages.Source{Topic: src.Topic, Partition: src.Partition}
	deadline := time.Now().Add(hs.Wait)
	for {
		hs.mu.Lock()
		cp, ok := hs.checkpoints[key]
		hs.mu.Unlock()
		if ok && cp >= src.Offset {
			return nil
		}
		if hs.Progress != nil {
			next, err := hs.Progress(ctx, src.Topic, src.Partition)
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("read persist progress: %w", err)
			}
			cp, err = next-1, nil
			hs.mu.Lock()
			hs.checkpoints[key] = max(hs.checkpoints[key], cp)
			hs.mu.Unlock()
			if cp >= src.Offset {
				return nil
			}
		} else {
			err := hs.pool.QueryRow(ctx, `SELECT last_offset FROM ingest_checkpoint WHERE consumer_group = $1 AND topic = $2 AND partition = $3`,
				hs.group, src.Topic, src.Partition).Scan(&cp)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("read persist checkpoint: %w", err)
			}
			if err == nil {
				hs.mu.Lock()
				hs.checkpoints[key] = max(hs.checkpoints[key], cp)
				hs.mu.Unlock()
				if cp >= src.Offset {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w to %s/%d offset %d within %s", ErrHistoryIncomplete, src.Topic, src.Partition, src.Offset, hs.Wait)
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
