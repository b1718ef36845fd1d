package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/sql/pgtest"
)

// TestBenchDashboards runs `bench -dashboards` small, on the server of
// DATABASE_URL: it times every panel query, prints the JSON line, and
// drops its database.
func TestBenchDashboards(t *testing.T) {
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, pgtest.ServerURL())
	if err != nil {
		pgtest.Need(t, "PostgreSQL", err)
	}
	defer conn.Close(ctx)
	benchDatabases := func() (n int) {
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname LIKE 'heartbeat_dashbench_%'").Scan(&n))
		return n
	}
	before := benchDatabases()

	t.Setenv("DATABASE_URL", pgtest.ServerURL())
	code, stdout, stderr := heartbeat(t, "bench", "-dashboards", "-rows", "5000", "-days", "1", "-customers", "50", "-runs", "1", "-json")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, "loaded 5000 readings over 1 days (50 customers)")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var res struct {
		Rows   int64 `json:"rows"`
		Panels []struct {
			Panel  string  `json:"panel"`
			MS     float64 `json:"ms"`
			Source string  `json:"source"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &res))
	require.EqualValues(t, 5000, res.Rows)
	require.NotEmpty(t, res.Panels)
	rollups := 0
	for _, p := range res.Panels {
		require.NotEmpty(t, p.Panel)
		require.Positive(t, p.MS, p.Panel)
		if p.Source == "rollup" {
			rollups++
		}
	}
	require.Positive(t, rollups, "the rollup panels are timed against the raw table")
	require.Equal(t, before, benchDatabases(), "the bench database is dropped")
}
