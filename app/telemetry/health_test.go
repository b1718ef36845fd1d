package telemetry_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
)

// TestHealthzReportsProblems: /healthz is 200 "ok" while no check reports a
// problem, 503 with every reason while any does, and `heartbeat
// healthcheck` (compose's health check) fails with the reason.
func TestHealthzReportsProblems(t *testing.T) {
	health := telemetry.NewHealth()
	url := telemetrytest.ServeHealth(t, telemetry.NewRegistry(), health)

	code, body := telemetrytest.GetHealthz(t, url)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	require.NoError(t, telemetry.HealthCheck(t.Context(), url))

	health.Set("outbox", "outbox not forwarding: 3 messages")
	health.Set("consumer group g", "consumer group g stalled: partitions t:2")
	code, body = telemetrytest.GetHealthz(t, url)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "consumer group g stalled: partitions t:2\noutbox not forwarding: 3 messages\n", body)
	err := telemetry.HealthCheck(t.Context(), url)
	require.ErrorContains(t, err, "503")
	require.ErrorContains(t, err, "outbox not forwarding: 3 messages")

	health.Set("outbox", "")
	health.Set("consumer group g", "")
	code, body = telemetrytest.GetHealthz(t, url)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
}

// TestExitWhenUnhealthy: a process unhealthy without a break for the bound
// gets an error naming the reason (it exits 1 and its supervisor restarts
// it); a problem that clears in time restarts the clock.
func TestExitWhenUnhealthy(t *testing.T) {
	health := telemetry.NewHealth()
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
	require.NoError(t, telemetry.NewHealth().ExitWhenUnhealthyFor(ctx, bound, 10*time.Millisecond))
}
