package sql_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	hbsql "github.com/heartbeat/heartbeat/sql"
	"github.com/heartbeat/heartbeat/sql/pgtest"
)

func TestWithDatabase(t *testing.T) {
	require.Equal(t, "postgres://postgres@127.0.0.1:5432/heartbeat_bench_1?sslmode=disable",
		hbsql.WithDatabase("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "heartbeat_bench_1"))
	require.Equal(t, "host=db user=u dbname=heartbeat_bench_1", hbsql.WithDatabase("host=db user=u", "heartbeat_bench_1"))
}

// A scratch database exists, empty, under its prefix, until Drop removes it
// even with a session still on it.
func TestScratchDatabase(t *testing.T) {
	ctx := context.Background()
	s, err := hbsql.CreateScratch(ctx, pgtest.ServerURL(), "hb_scratch_")
	if err != nil {
		pgtest.Need(t, "PostgreSQL", err)
	}
	t.Cleanup(func() { _ = s.Drop(ctx) })
	require.Regexp(t, `^hb_scratch_[0-9a-f]{12}$`, s.Name)
	conn, err := pgx.Connect(ctx, s.URL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var name string
	require.NoError(t, conn.QueryRow(ctx, "SELECT current_database()").Scan(&name))
	require.Equal(t, s.Name, name)

	require.NoError(t, s.Drop(ctx))
	admin, err := pgx.Connect(ctx, pgtest.ServerURL())
	require.NoError(t, err)
	defer admin.Close(ctx)
	var exists bool
	require.NoError(t, admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", s.Name).Scan(&exists))
	require.False(t, exists)
}
