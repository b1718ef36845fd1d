package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/bench"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/sql/pgtest"
)

// TestBenchSmoke runs every phase briefly against the built binary and
// checks the JSON line: every number reported, positive, nothing lost or
// duplicated.
func TestBenchSmoke(t *testing.T) {
	ctx, bin := benchSetup(t)

	o := bench.DefaultOptions()
	o.Binary, o.DatabaseURL, o.JSON = bin, pgtest.ServerURL(), true
	o.Duration, o.Warmup, o.Customers, o.DrainEvents = 2*time.Second, time.Second, 100, 20000
	o.CopyRows, o.PerRowTime, o.RSSCustomers = 50000, time.Second, 10000
	var stdout, stderr bytes.Buffer
	res, err := bench.Run(ctx, o, &stderr)
	if res != nil {
		res.Print(&stdout, o.JSON)
	}
	require.NoError(t, err, "stderr:\n%s\nstdout:\n%s", stderr.String(), stdout.String())
	t.Logf("stdout:\n%s", stdout.String())

	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &got), "last line: %s", lines[len(lines)-1])
	for _, key := range []string{
		"copy_ceiling_rows_per_s", "per_row_insert_rows_per_s",
		"ingest_events_per_s", "ingest_vs_copy", "ingest_vs_per_row",
		"drain_rows_per_s", "drain_vs_copy", "detect_events_per_s", "detect_history_rows_per_1000",
		"drain_rows_per_core_s", "drain_sink_cpu_ms_per_1000", "drain_postgres_cpu_ms_per_1000",
		"bare_copy_rows_per_s", "drain_vs_bare_copy", "drain_last_seen_rows_per_1000",
		"anomaly_latency_p50_ms", "anomaly_latency_p99_ms",
		"anomaly_row_latency_p50_ms", "anomaly_row_latency_p99_ms",
		"peak_rss_mb", "cores", "gomaxprocs",
	} {
		v, ok := got[key].(float64)
		require.True(t, ok, "key %s missing or not a number in %v", key, got)
		require.Positive(t, v, key)
	}
	for _, key := range []string{"lost", "duplicated"} {
		v, ok := got[key].(float64)
		require.True(t, ok, "key %s missing or not a number", key)
		require.Zero(t, v, key)
	}
	require.NotEmpty(t, got["postgres_version"])

	// The bench dropped its database.
	name := regexp.MustCompile(`database (heartbeat_bench_[0-9a-f]+) created`).FindStringSubmatch(stderr.String())
	require.NotNil(t, name, "stderr names the bench database:\n%s", stderr.String())
	conn, err := pgx.Connect(ctx, pgtest.ServerURL())
	require.NoError(t, err)
	defer conn.Close(ctx)
	var left bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name[1]).Scan(&left))
	require.False(t, left, "database %s left behind", name[1])
}

// benchSetup skips under -short, needs PostgreSQL, and builds the heartbeat
// binary the bench's children run; the context bounds the test.
func benchSetup(t *testing.T) (context.Context, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary and runs the pipeline")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	conn, err := pgx.Connect(ctx, pgtest.ServerURL())
	if err != nil {
		pgtest.Need(t, "PostgreSQL", err)
	}
	require.NoError(t, conn.Close(ctx))
	bin := filepath.Join(t.TempDir(), "heartbeat")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = "../.."
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return ctx, bin
}

// The drain phase runs on a Kafka of its own (-drain-brokers): an empty
// topic is loaded first, and a topic holding records (here, the same ones,
// as another sink would drain them) is drained as it is, in a fresh
// consumer group, every reading stored once.
func TestBenchDrainsAnExistingTopic(t *testing.T) {
	ctx, bin := benchSetup(t)
	cluster, err := kafka.StartBroker("127.0.0.1:0", "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	defer cluster.Close()

	for i, want := range []string{`drain: produced 3000 readings into sidebyside\.v1`, `drain: sidebyside\.v1 already holds 3000 records: 3000 valid readings, 0 invalid`} {
		o := bench.DefaultOptions()
		o.Binary, o.DatabaseURL, o.JSON, o.Phases = bin, pgtest.ServerURL(), true, []string{bench.PhaseDrain}
		o.DrainBrokers, o.DrainTopic, o.DrainEvents, o.Customers = cluster.ListenAddrs(), "sidebyside.v1", 3000, 50
		var stderr bytes.Buffer
		res, err := bench.Run(ctx, o, &stderr)
		require.NoError(t, err, "run %d stderr:\n%s", i, stderr.String())
		require.Regexp(t, want, stderr.String(), "run %d", i)
		var got map[string]any
		require.NoError(t, json.Unmarshal(res.JSON(), &got))
		require.Positive(t, got["drain_rows_per_s"])
		require.Positive(t, got["bare_copy_rows_per_s"])
		require.Zero(t, got["lost"])
		require.Zero(t, got["duplicated"])
	}
}
