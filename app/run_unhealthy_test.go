package app_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/heartbeat/heartbeat/app"
	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
	"github.com/stretchr/testify/require"
)

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
				Config: config.Config{MetricsAddr: telemetrytest.FreeAddr(t), ProgressInterval: time.Hour, ShutdownTimeout: time.Second,
					Health: config.HealthConfig{StallAfter: time.Minute, UnhealthyExitAfter: tc.exit}},
				Log:      slog.New(slog.DiscardHandler),
				Registry: telemetry.NewRegistry(),
				Health:   telemetry.NewHealth(),
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
			go func() { done <- a.Run(ctx, &app.Pipeline{Runners: []app.Runner{stall}}) }()
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
