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

func TestPartitionsAheadAndRetention(t *testing.T) {
	pool := database(t)
	ctx := context.Background()
	_, err := hbsql.Migrate(ctx, pool)
	require.NoError(t, err)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

	n, err := hbsql.EnsurePartitions(ctx, pool, now, 24*time.Hour)
	require.NoError(t, err)
	require.Equal(t, 5, n, "from MAX_EVENT_AGE+1 day back to 2 days ahead")
	require.Equal(t, []string{"heartbeat_events_default", "heartbeat_events_p20261123", "heartbeat_events_p20261124",
		"heartbeat_events_p20261125", "heartbeat_events_p20261126", "heartbeat_events_p20261127"}, partitions(t, pool))
	n, err = hbsql.EnsurePartitions(ctx, pool, now, 24*time.Hour)
	require.NoError(t, err)
	require.Zero(t, n)

	// A reading of a day without a partition lands in the default one; that
	// day is then skipped rather than failing.
	_, err = pool.Exec(ctx, `INSERT INTO heartbeat_events (event_id, customer_id, event_time, heart_rate, source_topic, source_partition, source_offset)
		VALUES ($1, 'c', '2026-11-20T12:00:00Z', 70, 't', 0, 0)`, uuid.NewString())
	require.NoError(t, err)
	_, err = hbsql.EnsurePartitions(ctx, pool, now, 6*24*time.Hour)
	require.NoError(t, err)
	require.NotContains(t, partitions(t, pool), "heartbeat_events_p20261120")
	require.Contains(t, partitions(t, pool), "heartbeat_events_p20261119")

	dropped, err := hbsql.DropPartitions(ctx, pool, now, 2)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"heartbeat_events_p20261118", "heartbeat_events_p20261119", "heartbeat_events_p20261121", "heartbeat_events_p20261122"}, dropped)
	require.Equal(t, "heartbeat_events_p20261123", partitions(t, pool)[1])
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
		(SELECT last_event_time FROM customer_last_seen WHERE customer_id = 'c')`).Scan(&events, &minutes, &last))
	require.Equal(t, 3, events)
	require.Equal(t, 2, minutes)
	require.True(t, last.Equal(time.Date(2026, 11, 25, 0, 0, 50, 0, time.UTC)))
}
