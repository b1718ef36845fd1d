package app

import (
	"context"
	"time"
)

// Pipeline is an assembled process: the parts that run, and what to close
// once they have stopped.
type Pipeline struct {
	Runners []Runner
	// Drain, when set, runs on a signal after the runners marked
	// StopsFirst have returned and before the others are stopped, for at
	// most half of SHUTDOWN_TIMEOUT: the consumers catch up with what the
	// producers left (see [App.OwnsBrokerData]).
	Drain   func(ctx context.Context) error
	closers []func(context.Context)
}

// Assemble builds the pipeline a's configuration asks for on a's
// infrastructure (router.go's newPipeline). On error it has released
// whatever it had opened.
type Assemble func(ctx context.Context, a *App) (*Pipeline, error)

// Add appends runners.
func (p *Pipeline) Add(runners ...Runner) { p.Runners = append(p.Runners, runners...) }

// OnClose registers f to run at Cleanup: the last registered first.
func (p *Pipeline) OnClose(f func(context.Context)) { p.closers = append(p.closers, f) }

// Cleanup releases the pipeline's resources once its runners have returned.
func (p *Pipeline) Cleanup(ctx context.Context) {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i](ctx)
	}
}

// Every is a runner calling f every interval until the process stops.
func Every(name string, interval time.Duration, f func(ctx context.Context)) Runner {
	return Runner{Name: name, Run: func(ctx context.Context) error {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				f(ctx)
			}
		}
	}}
}
