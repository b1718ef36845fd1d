//go:build chaos

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// outage: PostgreSQL stops for 20 s while the simulator produces.
func (s *chaosScenario) outage() {
	version, err := chaosPostgresVersion()
	need(s.t, "a local PostgreSQL cluster controlled by pg_ctlcluster (the outage scenario)", err)
	simStart := s.startPipeline()
	persist := s.proc("persist")

	// Mid-run: a third of the way through production, once rows flow.
	sleepUntil(simStart.Add(s.exp.duration / 3))
	if err := poll(time.Minute, 50*time.Millisecond, func() (bool, error) {
		n, err := s.storedRows(context.Background())
		return n > 0, err
	}); err != nil {
		s.t.Fatalf("no rows before the outage: %v", err)
	}
	raw, _ := s.k.records(s.cfg.Kafka.TopicRaw)
	stopped := true
	s.t.Cleanup(func() {
		if stopped {
			_ = chaosPgCtl(version, "start")
		}
	})
	if err := chaosPgCtl(version, "stop"); err != nil {
		s.t.Fatalf("stop PostgreSQL: %v", err)
	}
	down := time.Now()
	s.logf("PostgreSQL %s stopped at +%s (%d of %d events produced); down for %s", version, down.Sub(simStart).Round(time.Millisecond), raw, s.c.events, chaosOutage)
	time.Sleep(chaosOutage) // the outage itself
	if err := chaosPgCtl(version, "start"); err != nil {
		s.t.Fatalf("start PostgreSQL: %v", err)
	}
	stopped = false
	var up time.Time
	if err := poll(time.Minute, 20*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.dbURL)
		if err != nil {
			return false, err
		}
		up = time.Now()
		_ = conn.Close(ctx)
		return true, nil
	}); err != nil {
		s.t.Fatalf("PostgreSQL not accepting connections after start: %v", err)
	}
	// Rows whose transaction began after the server started again.
	var resumed time.Duration
	err = poll(time.Minute, 20*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var n int64
		err := s.pool.QueryRow(ctx, "SELECT count(*) FROM heartbeat_events WHERE ingest_time >= pg_postmaster_start_time()").Scan(&n)
		if err != nil || n == 0 {
			return false, err
		}
		resumed = time.Since(up)
		return true, nil
	})
	if err != nil {
		s.t.Errorf("no rows committed after PostgreSQL came back: %v", err)
	} else if resumed > chaosResumeBound {
		s.t.Errorf("consumption resumed %s after PostgreSQL accepted connections again (want within %s)", resumed.Round(time.Millisecond), chaosResumeBound)
	}
	s.row.recovery = resumed.Round(10 * time.Millisecond).String()
	s.logf("PostgreSQL accepting connections %s after the stop; first new rows committed %s later",
		up.Sub(down).Round(time.Millisecond), resumed.Round(time.Millisecond))

	// Logs and metrics once idle: "consumption resumed" is logged when the
	// last waiting message goes through, which may be after the first rows.
	s.afterIdle = append(s.afterIdle, func() { s.outageVisible(persist) })
}

func (s *chaosScenario) outageVisible(persist *chaosProc) {
	transient, err := scrapeMetric(persist.metrics, "heartbeat_transient_failures_total")
	if err != nil || transient == 0 {
		s.t.Errorf("outage not visible in %s's metrics: heartbeat_transient_failures_total = %v (%v)", persist.name, transient, err)
	}
	paused, _ := scrapeMetric(persist.metrics, "heartbeat_backpressure_paused_seconds_total")
	logText, _ := os.ReadFile(persist.logPath)
	pausing := strings.Index(string(logText), "pausing consumption")
	resumedAt := strings.LastIndex(string(logText), "consumption resumed")
	if pausing < 0 || resumedAt < pausing {
		s.t.Errorf("outage not visible in %s's log at LOG_LEVEL=%s: %q logged: %v, %q logged after it: %v",
			persist.name, s.env["LOG_LEVEL"], "pausing consumption", pausing >= 0, "consumption resumed", resumedAt > pausing)
	}
	s.note("persist metrics: heartbeat_transient_failures_total=%v heartbeat_backpressure_paused_seconds_total=%.1f; log: pausing=%v resumed=%v",
		transient, paused, pausing >= 0, resumedAt > pausing)
}

func chaosPostgresVersion() (string, error) {
	if _, err := exec.LookPath("pg_ctlcluster"); err != nil {
		return "", err
	}
	entries, err := os.ReadDir("/etc/postgresql")
	if err != nil {
		return "", err
	}
	best, bestN := "", -1.0
	for _, e := range entries {
		if n, err := strconv.ParseFloat(e.Name(), 64); err == nil && e.IsDir() && n > bestN {
			best, bestN = e.Name(), n
		}
	}
	if best == "" {
		return "", errors.New("no cluster version under /etc/postgresql")
	}
	return best, nil
}

func chaosPgCtl(version, action string) error {
	out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctlcluster %s main %s: %v: %s", version, action, err, out)
	}
	return nil
}
