package app_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app"
	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
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

// The last progress line is logged once every runner has returned: the
// batches a runner commits while it stops (after the signal) are in it,
// so its totals equal the tables'.
func TestFinalTotalsCountWhatRunnersFinishWhileStopping(t *testing.T) {
	cfg, err := config.LoadConfig(context.Background(), envconfig.MapLookuper(map[string]string{"METRICS_ADDR": "127.0.0.1:0"}))
	require.NoError(t, err)
	var logs telemetrytest.LogBuffer
	reg := telemetry.NewRegistry()
	m := telemetry.NewMetrics(reg)
	a := &app.App{Config: cfg, Log: slog.New(slog.NewTextHandler(&logs, nil)), Registry: reg}
	stopping := make(chan struct{})
	p := &app.Pipeline{}
	p.Add(app.Runner{Name: "persist", Run: func(ctx context.Context) error {
		m.DBInserts.Add(10)
		<-ctx.Done()
		close(stopping)
		// The batch in flight at the signal commits while the runner stops,
		// after progress would have seen the signal.
		time.Sleep(50 * time.Millisecond)
		m.DBInserts.Add(2)
		return nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, p) }()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	<-stopping
	final := logs.Lines(`msg="final totals"`)
	require.Len(t, final, 1, logs.String())
	require.Contains(t, final[0], "persisted=12")
	stopped := logs.Lines("msg=stopped")
	require.Len(t, stopped, 1)
	require.Less(t, strings.Index(logs.String(), final[0]), strings.Index(logs.String(), stopped[0]), "final totals before the last line")
}

// On a signal the producers (StopsFirst) stop, then the pipeline drains
// while the consumers still run, then the consumers stop; when a runner
// fails instead, nothing drains.
func TestSignalStopsProducersThenDrainsThenConsumers(t *testing.T) {
	cfg, err := config.LoadConfig(context.Background(), envconfig.MapLookuper(map[string]string{"METRICS_ADDR": "127.0.0.1:0"}))
	require.NoError(t, err)
	for _, signal := range []bool{true, false} {
		a := &app.App{Config: cfg, Log: telemetry.NewLogger("error"), Registry: telemetry.NewRegistry()}
		var (
			mu     sync.Mutex
			events []string
		)
		record := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
		consumerRunning := make(chan struct{})
		fail := make(chan struct{})
		p := &app.Pipeline{}
		p.Add(app.Runner{Name: "simulate", StopsFirst: true, Run: func(ctx context.Context) error {
			<-ctx.Done()
			record("producer stopped")
			return nil
		}}, app.Runner{Name: "router", Run: func(ctx context.Context) error {
			close(consumerRunning)
			select {
			case <-ctx.Done():
				record("consumer stopped")
				return nil
			case <-fail:
				return errors.New("cannot write")
			}
		}})
		p.Drain = func(ctx context.Context) error {
			if ctx.Err() != nil {
				record("drain cancelled before it began")
			}
			record("drained")
			return nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx, p) }()
		<-consumerRunning
		if signal {
			cancel()
		} else {
			close(fail)
		}
		select {
		case err := <-done:
			if signal {
				require.NoError(t, err)
				require.Equal(t, []string{"producer stopped", "drained", "consumer stopped"}, events)
			} else {
				require.EqualError(t, err, "router: cannot write")
				require.Equal(t, []string{"producer stopped"}, events, "no drain after a failure")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return")
		}
		cancel()
	}
}
