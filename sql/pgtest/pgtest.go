// Package pgtest gives tests a PostgreSQL database of their own.
package pgtest

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	hbsql "github.com/heartbeat/heartbeat/sql"
)

// ServerURL is the server the tests create their databases on:
// HEARTBEAT_TEST_DATABASE_URL, or the local one (trust auth).
func ServerURL() string {
	if u := os.Getenv("HEARTBEAT_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Need fails t under CI=true, where what must be there, and skips it
// elsewhere.
func Need(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true: %v", what, err)
	}
	t.Skipf("%s not available (set HEARTBEAT_TEST_DATABASE_URL): %v", what, err)
}

// Database creates an empty database named prefix+<random> for t, dropped
// after it, and returns its URL and a pool on it. A server it cannot reach
// fails t under CI=true and skips it elsewhere.
func Database(t testing.TB, prefix string) (string, *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	s, err := hbsql.CreateScratch(ctx, ServerURL(), prefix)
	if err != nil {
		if ce := (*pgconn.ConnectError)(nil); errors.As(err, &ce) {
			Need(t, "PostgreSQL", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Drop(context.Background()); err != nil {
			t.Errorf("drop database %s: %v", s.Name, err)
		}
	})
	pool, err := pgxpool.New(ctx, s.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close) // before the drop: cleanups run last first
	return s.URL, pool
}
