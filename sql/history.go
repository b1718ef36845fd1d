package sql

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heartbeat/heartbeat/messages"
)

// History answers, from customer_history (the readings the detector
// evaluated, grouped by customer: [HistoryWriter]), what a customer's
// latest reading was before a given record of the raw topic. The detector
// uses it to rebuild a customer's state after a restart or a rebalance,
// so that its anomalies are the same as those of an uninterrupted run.
// The detector's offsets never pass a reading whose history is not
// written, so the readings before the first record of an assignment are
// all there: nothing to wait for.
type History struct {
	pool *pgxpool.Pool
	// Window bounds how far back a previous reading is looked for.
	Window time.Duration
}

// NewHistory reads history from pool.
func NewHistory(pool *pgxpool.Pool, window time.Duration) *History {
	return &History{pool: pool, Window: window}
}

// Previous returns the latest reading (by event time, then offset) of
// h.CustomerID stored from records of src's partition before src, no older
// than Window before h. found is false when there is none.
func (hs *History) Previous(ctx context.Context, h messages.Heartbeat, src messages.Source) (at time.Time, rate int, found bool, err error) {
	from := h.Timestamp.Add(-hs.Window)
	var best historyReading
	err = hs.scanLatest(ctx, h.CustomerID, src, from, nil, func(r historyReading) {
		if !found || r.at.After(best.at) || r.at.Equal(best.at) && r.offset > best.offset {
			best, found = r, true
		}
	}, func() (time.Time, bool) { return best.at, found })
	if err != nil {
		return at, 0, false, fmt.Errorf("look up previous reading of %s: %w", h.CustomerID, err)
	}
	return best.at, int(best.rate), found, nil
}

// historyLatest and historyLatestBefore read the customer_history rows of
// a customer and source partition that may hold readings before an offset
// ($4), from a time on ($5), latest last_time first; the second only rows
// that begin before $7. A row's readings all fall on one UTC day, so $6,
// the first instant of $5's day, bounds first_time too and lets PostgreSQL
// skip the partitions of earlier days.
const (
	historyLatest = `SELECT last_time, readings FROM customer_history
	WHERE customer_id = $1 AND source_topic = $2 AND source_partition = $3 AND first_offset < $4
	  AND last_time >= $5 AND first_time >= $6
	ORDER BY last_time DESC`
	historyLatestBefore = `SELECT last_time, readings FROM customer_history
	WHERE customer_id = $1 AND source_topic = $2 AND source_partition = $3 AND first_offset < $4
	  AND last_time >= $5 AND first_time >= $6 AND first_time < $7
	ORDER BY last_time DESC`
)

// scanLatest calls f with each reading of customer stored from records of
// src's partition before src, with an event time from from on and, when
// before is set, before it — latest rows first — until the next row's
// last reading is earlier than the best found so far (best reports it).
func (hs *History) scanLatest(ctx context.Context, customer string, src messages.Source, from time.Time, before *time.Time,
	f func(historyReading), best func() (time.Time, bool)) error {
	query, args := historyLatest, []any{customer, src.Topic, src.Partition, src.Offset, from, DayOf(from).Time()}
	if before != nil {
		query, args = historyLatestBefore, append(args, *before)
	}
	rows, err := hs.pool.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var last time.Time
		var packed []byte
		if err := rows.Scan(&last, &packed); err != nil {
			return err
		}
		if t, ok := best(); ok && last.Before(t) {
			break // no reading of this row or a later one can be later
		}
		err := eachReading(packed, func(r historyReading) bool {
			if r.offset < src.Offset && !r.at.Before(from) && (before == nil || r.at.Before(*before)) {
				f(r)
			}
			return true
		})
		if err != nil {
			return err
		}
	}
	rows.Close()
	return rows.Err()
}
