package app_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app"
)

// TestHealthzReportsProblems: /healthz is 200 "ok" while no check reports a
// problem, 503 with every reason while any does, and `heartbeat
// healthcheck` (compose's health check) fails with the reason.
func TestHealthzReportsProblems(t *testing.T) {
	health := app.NewHealth()
	url := serveHealth(t, app.NewRegistry(), health)

	code, body := getHealthz(t, url)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	require.NoError(t, app.HealthCheck(t.Context(), url))

	health.Set("outbox", "outbox not forwarding: 3 messages")
	health.Set("consumer group g", "consumer group g stalled: partitions t:2")
	code, body = getHealthz(t, url)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "consumer group g stalled: partitions t:2\noutbox not forwarding: 3 messages\n", body)
	err := app.HealthCheck(t.Context(), url)
	require.ErrorContains(t, err, "503")
	require.ErrorContains(t, err, "outbox not forwarding: 3 messages")

	health.Set("outbox", "")
	health.Set("consumer group g", "")
	code, body = getHealthz(t, url)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
}

// TestExitWhenUnhealthy: a process unhealthy without a break for the bound
// gets an error naming the reason (it exits 1 and its supervisor restarts
// it); a problem that clears in time restarts the clock.
func TestExitWhenUnhealthy(t *testing.T) {
	health := app.NewHealth()
	const bound = 300 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- health.ExitWhenUnhealthyFor(t.Context(), bound, 10*time.Millisecond) }()

	// Unhealthy for less than the bound, twice: no exit.
	for range 2 {
		health.Set("outbox", "outbox not forwarding")
		select {
		case err := <-done:
			t.Fatalf("exited after a problem shorter than the bound: %v", err)
		case <-time.After(bound / 3):
		}
		health.Set("outbox", "")
	}
	_, since := health.Problems()
	require.True(t, since.IsZero(), "healthy again")

	started := time.Now()
	health.Set("consumer group g", "consumer group g stalled")
	select {
	case err := <-done:
		require.ErrorContains(t, err, "consumer group g stalled")
		require.ErrorContains(t, err, "UNHEALTHY_EXIT_AFTER")
		require.GreaterOrEqual(t, time.Since(started), bound)
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10 s after the process became unhealthy")
	}

	// Cancelled: no error.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.NoError(t, app.NewHealth().ExitWhenUnhealthyFor(ctx, bound, 10*time.Millisecond))
}

// TestRunStopsWhenUnhealthy: App.Run, what the process runs, returns the
// error (main exits 1 with it) once /healthz has failed for
// UNHEALTHY_EXIT_AFTER, after stopping its runners; with 0 it goes on.
func TestRunStopsWhenUnhealthy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		exit     time.Duration
		wantExit bool
	}{
		{"UNHEALTHY_EXIT_AFTER=300ms", 300 * time.Millisecond, true},
		{"UNHEALTHY_EXIT_AFTER=0", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &app.App{
				Config: app.Config{MetricsAddr: freeAddr(t), ProgressInterval: time.Hour, ShutdownTimeout: time.Second,
					Health: app.HealthConfig{StallAfter: time.Minute, UnhealthyExitAfter: tc.exit}},
				Log:      slog.New(slog.DiscardHandler),
				Registry: app.NewRegistry(),
				Health:   app.NewHealth(),
			}
			stopped := make(chan struct{})
			stall := app.Runner{Name: "stalled consumer", Run: func(ctx context.Context) error {
				a.Health.Set("consumer group g", "consumer group g stalled: partitions t:1")
				<-ctx.Done()
				close(stopped)
				return nil
			}}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx, []app.Runner{stall}, nil) }()
			select {
			case err := <-done:
				require.True(t, tc.wantExit, "Run returned %v", err)
				require.ErrorContains(t, err, "consumer group g stalled: partitions t:1")
				<-stopped
			case <-time.After(3 * time.Second): // three of the watcher's 1 s ticks
				require.False(t, tc.wantExit, "still running 3 s after becoming unhealthy")
				cancel()
				require.NoError(t, <-done)
			}
		})
	}
}

// --- helpers ---------------------------------------------------------------

// serveHealth serves reg and health as a process does and returns the
// /healthz URL.
func serveHealth(t *testing.T, reg *prometheus.Registry, health *app.Health) string {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	serve, err := app.ServeMetrics(ctx, addr, reg, health, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- serve() }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return "http://" + addr + "/healthz"
}

func getHealthz(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// waitHealthz polls url until it answers code, and returns the body.
func waitHealthz(t *testing.T, url string, code int, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, body := getHealthz(t, url)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz still %d (%q) after %s, want %d", got, body, timeout, code)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// gauge returns the value of the series of name with labels in reg, and
// whether it exists.
func gauge(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// logBuffer is a goroutine-safe log destination.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the log lines holding every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		ok := l != ""
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
