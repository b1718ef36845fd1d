package sql

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const day = 24 * time.Hour

// EnsurePartitions creates the daily partitions of heartbeat_events (UTC
// days) that readings valid at now can fall into: from maxAge before now to
// two days ahead. It returns how many it created.
func EnsurePartitions(ctx context.Context, pool *pgxpool.Pool, now time.Time, maxAge time.Duration) (int, error) {
	first := now.Add(-maxAge - day).UTC().Format(time.DateOnly)
	last := now.Add(2 * day).UTC().Format(time.DateOnly)
	var created int
	if err := pool.QueryRow(ctx, "SELECT heartbeat_ensure_partitions($1::date, $2::date)", first, last).Scan(&created); err != nil {
		return 0, fmt.Errorf("create partitions %s..%s: %w", first, last, err)
	}
	return created, nil
}

// DropPartitions drops the daily partitions wholly older than keep days
// before now and returns their names.
func DropPartitions(ctx context.Context, pool *pgxpool.Pool, now time.Time, keep int) ([]string, error) {
	firstKept := now.Add(-time.Duration(keep) * day).UTC().Format(time.DateOnly)
	rows, err := pool.Query(ctx, "SELECT heartbeat_drop_partitions($1::date)", firstKept)
	if err != nil {
		return nil, fmt.Errorf("drop partitions before %s: %w", firstKept, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
