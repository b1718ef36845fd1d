package app_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app"
	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/telemetry"
)

// A runner that fails stops the process: Run returns its error, naming it,
// after the other runners and the metrics server stopped and cleanup ran —
// it does not wait for a signal that may never come.
func TestRunStopsWhenARunnerFails(t *testing.T) {
	cfg, err := config.LoadConfig(context.Background(), envconfig.MapLookuper(map[string]string{"METRICS_ADDR": "127.0.0.1:0"}))
	require.NoError(t, err)
	a := &app.App{Config: cfg, Log: telemetry.NewLogger("error"), Registry: telemetry.NewRegistry()}
	cleaned := false
	p := &app.Pipeline{}
	p.Add(app.Runner{Name: "waits", Run: func(ctx context.Context) error { <-ctx.Done(); return nil }},
		app.Runner{Name: "router", Run: func(context.Context) error { return errors.New("cannot subscribe") }})
	p.OnClose(func(context.Context) { cleaned = true })
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background(), p) }()
	select {
	case err := <-done:
		require.EqualError(t, err, "router: cannot subscribe")
		require.True(t, cleaned, "cleanup ran")
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after a runner failed")
	}
}
