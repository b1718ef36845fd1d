package sql_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	hbsql "github.com/heartbeat/heartbeat/sql"
	"github.com/heartbeat/heartbeat/sql/pgtest"
)

// database creates a fresh, empty database for t and drops it after.
func database(t testing.TB) *pgxpool.Pool {
	t.Helper()
	_, pool := pgtest.Database(t, "hb_sql_")
	return pool
}

// migrated is database(t) with every migration applied.
func migrated(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool := database(t)
	_, err := hbsql.Migrate(context.Background(), pool)
	require.NoError(t, err)
	return pool
}

func partitions(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'heartbeat_events'::regclass ORDER BY 1`)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

func TestMigrationsAreIdempotent(t *testing.T) {
	pool := database(t)
	ctx := context.Background()
	applied, err := hbsql.Migrate(ctx, pool)
	require.NoError(t, err)
	require.NotEmpty(t, applied)
	applied, err = hbsql.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Empty(t, applied, "a second start applies nothing")
}

// Start-up creates today's partition and the two days' ahead, one day per
// transaction; retention drops whole days; a relation of a partition's name
// that is not a partition is an error, not a partition to assume.
func TestPartitionsAheadAndRetention(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	require.Empty(t, partitions(t, pool), "no default partition: a day without one is created on demand")

	n, err := hbsql.EnsurePartitions(ctx, pool, now, 0)
	require.NoError(t, err)
	require.Equal(t, 3, n, "today and two days ahead")
	require.Equal(t, []string{"heartbeat_events_p20261125", "heartbeat_events_p20261126", "heartbeat_events_p20261127"}, partitions(t, pool))
	n, err = hbsql.EnsurePartitions(ctx, pool, now, 0)
	require.NoError(t, err)
	require.Zero(t, n)

	// Days far apart: only those days, not the years between.
	p := hbsql.NewPartitions(pool)
	n, err = p.Ensure(ctx, hbsql.DayOf(time.Date(2016, 2, 29, 23, 59, 59, 0, time.UTC)), hbsql.DayOf(time.Date(1969, 12, 31, 12, 0, 0, 0, time.UTC)))
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, []string{"heartbeat_events_p19691231", "heartbeat_events_p20160229", "heartbeat_events_p20261125",
		"heartbeat_events_p20261126", "heartbeat_events_p20261127"}, partitions(t, pool))

	_, err = pool.Exec(ctx, `CREATE TABLE heartbeat_events_p20261128 (x int)`)
	require.NoError(t, err)
	_, err = hbsql.EnsurePartitions(ctx, pool, now.Add(24*time.Hour), 0)
	require.ErrorContains(t, err, "heartbeat_events_p20261128 exists and is not a partition of heartbeat_events")

	dropped, err := hbsql.NewPartitions(pool).Drop(ctx, now, 1)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"heartbeat_events_p19691231", "heartbeat_events_p20160229",
		"customer_history_p19691231", "customer_history_p20160229"}, dropped, "a day's readings and their history go together")
	require.Equal(t, "heartbeat_events_p20261125", partitions(t, pool)[0])
}

// A database migrated before partitions on demand may hold readings in the
// default partition; the migration moves them to their days' partitions
// and drops it.
func TestMigrationMovesTheDefaultPartition(t *testing.T) {
	pool := database(t)
	ctx := context.Background()
	_, err := hbsql.MigrateTo(ctx, pool, 3)
	require.NoError(t, err)
	for i, at := range []string{"2015-06-01T10:00:00Z", "2015-06-01T23:59:59.999Z", "2016-01-01T00:00:00Z"} {
		_, err = pool.Exec(ctx, `INSERT INTO heartbeat_events (event_id, customer_id, event_time, heart_rate, source_topic, source_partition, source_offset)
			VALUES ($1, 'c', $2, 70, 't', 0, $3)`, uuid.NewString(), at, i)
		require.NoError(t, err)
	}
	require.Equal(t, []string{"heartbeat_events_default"}, partitions(t, pool))
	_, err = hbsql.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, []string{"heartbeat_events_p20150601", "heartbeat_events_p20160101"}, partitions(t, pool))
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM heartbeat_events_p20150601`).Scan(&n))
	require.Equal(t, 2, n)
}

func TestMigrationMovesExistingReadingsAndBackfillsRollups(t *testing.T) {
	pool := database(t)
	ctx := context.Background()
	_, err := hbsql.MigrateTo(ctx, pool, 1)
	require.NoError(t, err)
	for i, at := range []string{"2026-11-24T23:59:30Z", "2026-11-25T00:00:10Z", "2026-11-25T00:00:50Z"} {
		_, err = pool.Exec(ctx, `INSERT INTO heartbeat_events (event_id, customer_id, event_time, heart_rate, source_topic, source_partition, source_offset)
			VALUES ($1, 'c', $2, 70, 't', 0, $3)`, uuid.NewString(), at, i)
		require.NoError(t, err)
	}
	_, err = hbsql.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Contains(t, partitions(t, pool), "heartbeat_events_p20261124")
	require.Contains(t, partitions(t, pool), "heartbeat_events_p20261125")
	var events, minutes int
	var last time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM heartbeat_events), (SELECT count(*) FROM heartbeat_minute_rates),
		(SELECT last_minute FROM customer_last_seen WHERE customer_id = 'c')`).Scan(&events, &minutes, &last))
	require.Equal(t, 3, events)
	require.Equal(t, 2, minutes)
	require.True(t, last.Equal(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)), "the minute of the latest reading, got %s", last)
}

// During a rolling upgrade a persist of the previous version writes
// customer_last_seen beside this one, with the statement it knew: after
// migration 0006 it still succeeds, and its rows carry the minute of the
// reading it wrote.
func TestLastSeenOfThePreviousVersionAfterMigration(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	previous := `INSERT INTO customer_last_seen (customer_id, last_event_time, last_heart_rate) VALUES ($1, $2, 70)
		ON CONFLICT (customer_id) DO UPDATE SET last_event_time = EXCLUDED.last_event_time, last_heart_rate = EXCLUDED.last_heart_rate
		WHERE customer_last_seen.last_event_time < EXCLUDED.last_event_time`
	minute := func() time.Time {
		var m time.Time
		require.NoError(t, pool.QueryRow(ctx, `SELECT last_minute FROM customer_last_seen WHERE customer_id = 'old'`).Scan(&m))
		return m.UTC()
	}
	at := time.Date(2026, 12, 6, 10, 0, 30, 0, time.UTC)
	_, err := pool.Exec(ctx, previous, "old", at)
	require.NoError(t, err)
	require.Equal(t, at.Truncate(time.Minute), minute())
	_, err = pool.Exec(ctx, previous, "old", at.Add(2*time.Minute))
	require.NoError(t, err)
	require.Equal(t, at.Add(2*time.Minute).Truncate(time.Minute), minute())
}
