package sql

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

const day = 24 * time.Hour

// Day is a UTC day, counted from 1970-01-01: the key of a daily partition
// of heartbeat_events.
type Day int64

// DayOf returns the UTC day of t.
func DayOf(t time.Time) Day {
	s := t.Unix()
	d := s / 86400
	if s%86400 < 0 {
		d-- // towards the past, for days before 1970
	}
	return Day(d)
}

// Time is the day's first instant.
func (d Day) Time() time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

// String is the day as YYYY-MM-DD.
func (d Day) String() string { return d.Time().Format(time.DateOnly) }

// Partitions creates the daily partitions of heartbeat_events as readings
// need them, and remembers those it knows exist, so that a batch whose
// days are known costs no query. It is safe for concurrent use, and several
// processes may create the same day's partition at once
// (heartbeat_ensure_partition is idempotent).
type Partitions struct {
	pool *pgxpool.Pool

	mu    sync.Mutex
	known map[Day]struct{}
}

// NewPartitions returns partitions of heartbeat_events in pool's database.
func NewPartitions(pool *pgxpool.Pool) *Partitions {
	return &Partitions{pool: pool, known: map[Day]struct{}{}}
}

// Ensure creates the partitions of days that do not exist yet, each in its
// own transaction (so that no number of days exhausts the server's lock
// table), and returns how many it created.
func (p *Partitions) Ensure(ctx context.Context, days ...Day) (created int, err error) {
	var missing []Day
	p.mu.Lock()
	for _, d := range days {
		if _, ok := p.known[d]; !ok && !slices.Contains(missing, d) {
			missing = append(missing, d)
		}
	}
	p.mu.Unlock()
	slices.Sort(missing)
	for _, d := range missing {
		var made bool
		if err := p.pool.QueryRow(ctx, "SELECT heartbeat_ensure_partition($1::date)", d.String()).Scan(&made); err != nil {
			return created, fmt.Errorf("create partition of heartbeat_events for %s: %w", d, err)
		}
		if made {
			created++
		}
		p.mu.Lock()
		p.known[d] = struct{}{}
		p.mu.Unlock()
	}
	return created, nil
}

// EnsureRange creates the partitions of every day from first to last
// (inclusive), as Ensure.
func (p *Partitions) EnsureRange(ctx context.Context, first, last time.Time) (int, error) {
	var days []Day
	for d := DayOf(first); d <= DayOf(last); d++ {
		days = append(days, d)
	}
	return p.Ensure(ctx, days...)
}

// writeIn runs write, whose rows fall on days, once the days' partitions
// exist. A partition dropped since it was made (retention, by this process
// or another) fails write with "no partition of relation found for row":
// the partition is made again and write run again, once.
func (p *Partitions) writeIn(ctx context.Context, days []Day, write func() error) error {
	if _, err := p.Ensure(ctx, days...); err != nil {
		return err
	}
	err := write()
	if isNoPartition(err) {
		p.forget(days...)
		if _, err := p.Ensure(ctx, days...); err != nil {
			return err
		}
		err = write()
	}
	return err
}

// forget drops days from what p knows exists: their partitions were
// dropped, by this process or another.
func (p *Partitions) forget(days ...Day) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range days {
		delete(p.known, d)
	}
}

// Drop drops the daily partitions wholly older than keep days before now
// and returns their names.
func (p *Partitions) Drop(ctx context.Context, now time.Time, keep int) ([]string, error) {
	if keep <= 0 {
		return nil, fmt.Errorf("drop partitions: keep %d days, want at least 1", keep)
	}
	firstKept := now.UTC().AddDate(0, 0, -keep).Format(time.DateOnly)
	rows, err := p.pool.Query(ctx, "SELECT heartbeat_drop_partitions($1::date)", firstKept)
	if err != nil {
		return nil, fmt.Errorf("drop partitions before %s: %w", firstKept, err)
	}
	dropped, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("drop partitions before %s: %w", firstKept, err)
	}
	// Forget every day before the first kept: dropped here or elsewhere.
	first, err := time.Parse(time.DateOnly, firstKept)
	if err != nil {
		return dropped, err
	}
	p.mu.Lock()
	for d := range p.known {
		if d < DayOf(first) {
			delete(p.known, d)
		}
	}
	p.mu.Unlock()
	return dropped, nil
}

// partitionsAhead is how far ahead of today Maintain creates daily
// partitions, so that a day's first readings find theirs.
const partitionsAhead = 2 * day

// Maintain creates today's partition and the next days' — the writer
// creates those of other days as their readings arrive — and, with keepDays
// above 0, drops the partitions wholly older than keepDays
// (HEARTBEAT_RETENTION_DAYS), logging what it did.
func (p *Partitions) Maintain(ctx context.Context, now time.Time, keepDays int, log *slog.Logger) error {
	n, err := p.EnsureRange(ctx, now, now.Add(partitionsAhead))
	if err != nil {
		return err
	}
	if n > 0 {
		log.Info("heartbeat_events partitions created", "count", n)
	}
	if keepDays <= 0 {
		return nil
	}
	dropped, err := p.Drop(ctx, now, keepDays)
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	if len(dropped) > 0 {
		log.Info("heartbeat_events partitions dropped (retention)", "partitions", dropped, "retention_days", keepDays)
	}
	return nil
}

// EnsurePartitions creates the daily partitions of heartbeat_events (UTC
// days) from back before now to two days after it, one day per
// transaction. It returns how many it created.
func EnsurePartitions(ctx context.Context, pool *pgxpool.Pool, now time.Time, back time.Duration) (int, error) {
	return NewPartitions(pool).EnsureRange(ctx, now.Add(-back), now.Add(partitionsAhead))
}

// checkViolation is PostgreSQL's SQLSTATE both for a row no partition
// accepts and for a CHECK constraint; the first names no constraint.
const checkViolation = "23514"

// isNoPartition reports whether err is PostgreSQL's "no partition of
// relation found for row": a day whose partition does not exist (any more).
func isNoPartition(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == checkViolation && pgErr.ConstraintName == ""
}
