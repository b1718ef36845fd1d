package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// TestStartupFailures injects the failures of start-up one at a time into
// the built binary: each ends the process with status 1 and one line on
// stderr, "heartbeat: " and the cause — no panic, no goroutine dump, no
// second line (LOG_LEVEL=error: the logs of a start-up that fails are not
// errors of their own). Then SIGTERM during start-up (signalDuringStartup),
// with the same binary.
func TestStartupFailures(t *testing.T) {
	bin := heartbeatBinary(t)
	startupFailures(t, bin)
	t.Run("SIGTERM", func(t *testing.T) { signalDuringStartup(t, bin) })
	t.Run("help before configuration", func(t *testing.T) { helpBeforeConfiguration(t, bin) })
}

// helpBeforeConfiguration: the binary prints its usages and exits 0 with a
// variable that would stop start-up, and refuses an unknown command in one
// line (app/cli's tests cover every command in process).
func helpBeforeConfiguration(t *testing.T, bin string) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-h"}, 0, "Commands:\n"},
		{[]string{"help", "dlq", "list"}, 0, "Usage:\n  heartbeat dlq list"},
		{[]string{"bench", "-dashboards", "-h"}, 0, "Usage:\n  heartbeat bench -dashboards"},
		{[]string{"evaluate", "--help"}, 0, "Usage:\n  heartbeat evaluate"},
		{[]string{"--bogus"}, 1, `heartbeat: unknown command "--bogus"`},
	} {
		cmd := exec.Command(bin, c.args...)
		cmd.Env = processEnv(map[string]string{"SIM_EVENTS_PER_SECOND": "abc"})
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if c.code == 0 {
			require.NoError(t, err, "%q: %s", c.args, stderr.String())
			require.Contains(t, stdout.String(), c.want, c.args)
			require.Empty(t, stderr.String(), c.args)
			continue
		}
		var exit *exec.ExitError
		require.True(t, errors.As(err, &exit), "%q exits with a status, got %v", c.args, err)
		require.Equal(t, c.code, exit.ExitCode(), c.args)
		require.Equal(t, 1, strings.Count(stderr.String(), "\n"), "one line: %s", stderr.String())
		require.Contains(t, stderr.String(), c.want, c.args)
	}
}

func startupFailures(t *testing.T, bin string) {
	today := time.Now().UTC()
	metricsTaken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer metricsTaken.Close()

	cases := []struct {
		name string
		// prepare readies the case's scratch database (nil: no database).
		prepare func(t *testing.T, pool *pgxpool.Pool)
		env     map[string]string
		want    string
	}{
		{
			name: "partitions cannot be created",
			prepare: func(t *testing.T, pool *pgxpool.Pool) {
				// A table, not a partition, under the names of the days
				// start-up creates (past midnight too).
				for d := range 4 {
					_, err := pool.Exec(context.Background(), fmt.Sprintf("CREATE TABLE heartbeat_events_p%s (x int)", today.AddDate(0, 0, d).Format("20060102")))
					require.NoError(t, err)
				}
			},
			env:  map[string]string{"ROUTER_HANDLERS": "persist"},
			want: "exists and is not a partition of heartbeat_events",
		},
		{
			name: "topics cannot be created",
			env:  map[string]string{"ROUTER_HANDLERS": "simulate", "KAFKA_REPLICATION_FACTOR": "3"},
			want: "Kafka refused to create topic KAFKA_TOPIC_RAW=events.raw.v1 with KAFKA_PARTITIONS_RAW=24 and KAFKA_REPLICATION_FACTOR=3",
		},
		{
			name: "migrations fail",
			prepare: func(t *testing.T, pool *pgxpool.Pool) {
				_, err := pool.Exec(context.Background(), "CREATE TYPE anomalies AS ENUM ('x')")
				require.NoError(t, err)
			},
			env:  map[string]string{"ROUTER_HANDLERS": "persist,detect"},
			want: `cannot migrate database`,
		},
		{
			name: "outbox schema cannot be created",
			prepare: func(t *testing.T, pool *pgxpool.Pool) {
				_, err := hbsql.Migrate(context.Background(), pool)
				require.NoError(t, err)
				_, err = pool.Exec(context.Background(), "CREATE TYPE watermill_outbox AS ENUM ('x')")
				require.NoError(t, err)
			},
			env:  map[string]string{"ROUTER_HANDLERS": "detect"},
			want: `create outbox table: ERROR: type "watermill_outbox" already exists`,
		},
		{
			name: "broker unreachable",
			env:  map[string]string{"ROUTER_HANDLERS": "simulate", "KAFKA_BOOTSTRAP_SERVERS": telemetrytest.FreeAddr(t), "STARTUP_TIMEOUT": "2s"},
			want: "KAFKA_BOOTSTRAP_SERVERS: cannot reach Kafka at 127.0.0.1:",
		},
		{
			name: "database unreachable",
			env:  map[string]string{"ROUTER_HANDLERS": "persist", "DATABASE_URL": "postgres://postgres@" + telemetrytest.FreeAddr(t) + "/heartbeat", "STARTUP_TIMEOUT": "2s"},
			want: "DATABASE_URL: cannot reach PostgreSQL at 127.0.0.1:",
		},
		{
			name: "metrics listener port taken",
			env:  map[string]string{"ROUTER_HANDLERS": "simulate", "METRICS_ADDR": metricsTaken.Addr().String()},
			want: "METRICS_ADDR: cannot listen on " + metricsTaken.Addr().String(),
		},
		{
			name: "a handler named twice",
			env:  map[string]string{"ROUTER_HANDLERS": "persist,persist"},
			want: `ROUTER_HANDLERS: "persist" is named twice in "persist,persist"`,
		},
		{
			name: "a setting out of range",
			env:  map[string]string{"MAX_EVENT_AGE": "3000000h"},
			want: `MAX_EVENT_AGE="3000000h": out of range: the longest duration is 2562047h47m16.854775807s (about 292 years)`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"LOG_LEVEL": "error", "METRICS_ADDR": "127.0.0.1:0", "KAFKA_BOOTSTRAP_SERVERS": "", "DATABASE_URL": ""}
			if c.prepare != nil {
				url, pool := testDatabase(t)
				c.prepare(t, pool)
				env["DATABASE_URL"] = url
			}
			for k, v := range c.env {
				env[k] = v
			}
			cmd := exec.Command(bin)
			cmd.Env = processEnv(env)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			require.NoError(t, cmd.Start())
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("still running after 60 s; stderr:\n%s", stderr.String())
			}
			var exit *exec.ExitError
			require.True(t, errors.As(err, &exit), "exits with a status, got %v; stderr:\n%s", err, stderr.String())
			require.Equal(t, 1, exit.ExitCode(), "stderr:\n%s", stderr.String())
			lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
			require.Len(t, lines, 1, "one line on stderr:\n%s", stderr.String())
			require.True(t, strings.HasPrefix(lines[0], "heartbeat: "), lines[0])
			require.Contains(t, lines[0], c.want)
			require.NotContains(t, lines[0], "panic")
			require.Empty(t, stdout.String())
			t.Log(lines[0])
		})
	}
}

// signalDuringStartup sends SIGTERM while start-up waits for Kafka, and
// while it waits for PostgreSQL: the process stops at once (STARTUP_TIMEOUT
// is a minute) and exits 0, saying so in one line.
func signalDuringStartup(t *testing.T, bin string) {
	for _, c := range []struct {
		name, waiting string
		env           map[string]string
	}{
		{"waiting for Kafka", "cannot create topic yet, retrying",
			map[string]string{"ROUTER_HANDLERS": "simulate", "KAFKA_BOOTSTRAP_SERVERS": telemetrytest.FreeAddr(t)}},
		{"waiting for PostgreSQL", "database not reachable yet, retrying",
			map[string]string{"ROUTER_HANDLERS": "persist", "DATABASE_URL": "postgres://postgres@" + telemetrytest.FreeAddr(t) + "/heartbeat"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"LOG_LEVEL": "warn", "METRICS_ADDR": "127.0.0.1:0", "STARTUP_TIMEOUT": "1m",
				"KAFKA_BOOTSTRAP_SERVERS": "", "DATABASE_URL": ""}
			for k, v := range c.env {
				env[k] = v
			}
			cmd := exec.Command(bin)
			cmd.Env = processEnv(env)
			stderr, err := cmd.StderrPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			lines := make(chan string, 64)
			go func() {
				defer close(lines)
				s := bufio.NewScanner(stderr)
				for s.Scan() {
					lines <- s.Text()
				}
			}()
			var all []string
			for waiting := false; !waiting; {
				select {
				case l, ok := <-lines:
					require.True(t, ok, "exited before waiting; stderr:\n%s", strings.Join(all, "\n"))
					all = append(all, l)
					waiting = strings.Contains(l, c.waiting)
				case <-time.After(30 * time.Second):
					_ = cmd.Process.Kill()
					t.Fatalf("not %s within 30 s; stderr:\n%s", c.name, strings.Join(all, "\n"))
				}
			}
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			deadline := time.After(10 * time.Second)
			for open := true; open; {
				select {
				case l, ok := <-lines:
					if open = ok; ok {
						all = append(all, l)
					}
				case <-deadline:
					_ = cmd.Process.Kill()
					t.Fatalf("did not stop within 10 s of SIGTERM; stderr:\n%s", strings.Join(all, "\n"))
				}
			}
			require.NoError(t, cmd.Wait(), "exit 0 on SIGTERM; stderr:\n%s", strings.Join(all, "\n"))
			require.Equal(t, "heartbeat: stopped by a signal during start-up", all[len(all)-1])
			for _, l := range all {
				require.NotContains(t, l, "panic")
			}
		})
	}
}
