package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/heartbeat/heartbeat/app/telemetry"
	"golang.org/x/sync/errgroup"
)

// Runner is one long-running part of the process.
type Runner struct {
	Name string
	Run  func(ctx context.Context) error
	// Ends, when set, means the process is done once this runner returns
	// nil (the simulator alone, with SIM_TOTAL_EVENTS).
	Ends bool
	// StopsFirst, when set, stops this runner on a signal before the
	// pipeline drains (Pipeline.Drain) and the others stop: a producer.
	StopsFirst bool
}

// Run serves /metrics and /healthz, logs progress, and runs the runners
// until ctx ends (SIGINT/SIGTERM), an Ends runner finishes, or one fails —
// or the process has been unhealthy for UNHEALTHY_EXIT_AFTER, which is an
// error too; then cleanup runs with a deadline of SHUTDOWN_TIMEOUT, whatever
// happened.
func (a *App) Run(ctx context.Context, p *Pipeline) (err error) {
	runners := p.Runners
	signalled := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer func() {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), a.Config.ShutdownTimeout)
		defer ccancel()
		start := time.Now()
		p.Cleanup(cctx)
		a.Log.Info("stopped", "cleanup", time.Since(start).Round(time.Millisecond))
	}()
	if a.Health == nil {
		a.Health = telemetry.NewHealth()
	}
	ln := a.metricsLn
	if ln == nil {
		if ln, err = telemetry.ListenMetrics(a.Config.EffectiveMetricsAddr()); err != nil {
			return err
		}
	}
	a.metricsLn = nil // served from here on: closed when gctx ends
	g, gctx := errgroup.WithContext(ctx)
	// Served until the group ends: a runner that fails stops the server too,
	// or Wait would wait for it until a signal came.
	g.Go(telemetry.Serve(gctx, ln, a.Registry, a.Health, a.Log))
	// Progress runs until every runner has returned, so that its last line
	// counts what the runners finished while they stopped (the batches in
	// flight at the signal): the totals a user compares with the tables.
	pctx, pstop := context.WithCancel(context.WithoutCancel(ctx))
	pdone := make(chan struct{})
	go func() {
		defer close(pdone)
		telemetry.ReportProgress(pctx, a.Registry, a.Config.ProgressInterval, a.Log)
	}()
	defer func() { pstop(); <-pdone }()
	if d := a.Config.Health.UnhealthyExitAfter; d > 0 {
		g.Go(func() error { return a.Health.ExitWhenUnhealthyFor(gctx, d, time.Second) })
	}
	// The runners marked StopsFirst run on gctx; the others on rest, which
	// ends after them and the drain on a signal, and at once when the
	// group ends otherwise (a runner failed or finished, or health).
	rest, stopRest := context.WithCancel(context.WithoutCancel(gctx))
	defer stopRest()
	var first sync.WaitGroup
	for _, r := range runners {
		rctx := rest
		if r.StopsFirst {
			rctx = gctx
			first.Add(1)
		}
		g.Go(func() error {
			if r.StopsFirst {
				defer first.Done()
			}
			err := r.Run(rctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				stopRest() // a drain under way cannot finish
				return fmt.Errorf("%s: %w", r.Name, err)
			}
			if r.Ends && err == nil {
				a.Log.Info(r.Name + " finished")
				cancel()
			}
			return nil
		})
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		<-gctx.Done()
		if signalled.Err() != nil && p.Drain != nil {
			first.Wait()
			dctx, dcancel := context.WithTimeout(rest, a.Config.ShutdownTimeout/2)
			if err := p.Drain(dctx); err != nil && rest.Err() == nil {
				a.Log.Warn("stopping without draining", "err", err)
			}
			dcancel()
		}
		stopRest()
	}()
	err = g.Wait()
	stopRest()
	<-drained // before cleanup closes what the drain reads
	return err
}
