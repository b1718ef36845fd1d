package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
)

// TestStopWithTheInProcessBrokerLosesNoReading: a plain `heartbeat` (no
// KAFKA_BOOTSTRAP_SERVERS) owns its broker, whose records live in memory.
// SIGTERMed while the simulator produces faster than the rows are written,
// it stops the simulator first and stores what the broker holds before it
// exits: every produced reading is a row or an invalid envelope, and the
// last line's totals are the table's.
func TestStopWithTheInProcessBrokerLosesNoReading(t *testing.T) {
	bin := heartbeatBinary(t)
	dbURL, pool := testDatabase(t)
	for i, rate := range []string{"20000", "50000"} {
		t.Run(rate, func(t *testing.T) {
			ctx := context.Background()
			if i > 0 { // the first run created the tables
				_, err := pool.Exec(ctx, "TRUNCATE heartbeat_events, ingest_checkpoint")
				require.NoError(t, err)
			}
			metrics := telemetrytest.FreeAddr(t)
			cmd := exec.Command(bin)
			cmd.Env = processEnv(map[string]string{"DATABASE_URL": dbURL, "METRICS_ADDR": metrics,
				"SIM_EVENTS_PER_SECOND": rate, "PROGRESS_INTERVAL": "1s"})
			p := startProcess(t, "heartbeat", filepath.Join(t.TempDir(), "heartbeat.log"), cmd)
			t.Cleanup(p.kill)
			// Under way: rows stored and the simulator well ahead of them.
			waitFor(t, "rows stored", time.Minute, func() (bool, error) {
				var n int64
				err := pool.QueryRow(ctx, "SELECT count(*) FROM heartbeat_events").Scan(&n)
				return n > 20000, err
			})
			took, inTime := p.terminate(30 * time.Second)
			require.True(t, inTime, "exit within 30 s of SIGTERM (took %s); log:\n%s", took, p.tail(20))
			require.Equal(t, 0, p.exitCode(), p.tail(20))

			logText, err := os.ReadFile(p.logPath)
			require.NoError(t, err)
			m := regexp.MustCompile(`msg="final totals" produced=(\d+) persisted=(\d+) invalid=(\d+) dlq=(\d+)`).FindSubmatch(logText)
			require.NotNil(t, m, "no final totals; log:\n%s", p.tail(20))
			n := func(i int) int64 { v, _ := strconv.ParseInt(string(m[i]), 10, 64); return v }
			produced, persisted, invalid, dlq := n(1), n(2), n(3), n(4)
			var rows int64
			require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM heartbeat_events").Scan(&rows))
			t.Logf("SIGTERM to exit %s; produced %d, rows %d, invalid %d, dlq %d", took.Round(time.Millisecond), produced, rows, invalid, dlq)
			require.Equal(t, produced, persisted+invalid+dlq, "every produced reading stored or routed; log:\n%s", p.tail(20))
			require.Equal(t, persisted, rows, "the final totals are the table's")
			require.Regexp(t, `stopping: consuming what the in-process broker holds first`, string(logText))
			require.NotRegexp(t, `level=ERROR`, string(logText))
		})
	}
}
