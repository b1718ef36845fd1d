package cli

import (
	"context"
	"errors"
	"flag"

	"github.com/heartbeat/heartbeat/app"
	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/telemetry"
)

var runUsage = usage{
	synopsis: `
		heartbeat
		heartbeat run`,
	about: `
Runs the pipeline: the handlers ROUTER_HANDLERS selects (simulate, persist,
detect; all three by default), in this process, until SIGINT or SIGTERM.
With KAFKA_BOOTSTRAP_SERVERS empty it starts an in-process Kafka broker
and logs its address; persist and detect create and migrate the database.
Metrics and /healthz are served on METRICS_ADDR. Every setting is an
environment variable: see the README's Configuration section for all of
them; a bad value stops start-up with one line naming the variable.`,
	environment: `
		ROUTER_HANDLERS	handlers to run, comma-separated, each once (default simulate,persist,detect)
		KAFKA_BOOTSTRAP_SERVERS	Kafka brokers, host:port,...; empty: an in-process broker
		DATABASE_URL	postgres:// URL; empty: POSTGRES_HOST, _PORT, _DB, _USER, _PASSWORD
		METRICS_ADDR	listen address of /metrics and /healthz (default 127.0.0.1:8000, 8001 or 8002 by role)
		SIM_EVENTS_PER_SECOND	the simulator's rate (SIM_* tune the rest of it)
		LOG_LEVEL	debug, info, warn or error`,
	examples: `
		heartbeat
		ROUTER_HANDLERS=persist,detect KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 heartbeat`,
}

// runPipeline is `heartbeat [run]`.
func runPipeline(ctx context.Context, e *env, args []string) error {
	ops, err := e.parse("run", flag.NewFlagSet("run", flag.ContinueOnError), runUsage, args)
	if err != nil {
		return err
	}
	if err := noOperands("run", ops); err != nil {
		return err
	}
	cfg, err := config.LoadConfig(ctx, nil)
	if err != nil {
		return err
	}
	if e.assemble == nil {
		return errors.New("run: this program was built without the pipeline")
	}
	a, err := app.New(ctx, cfg, telemetry.NewLogger(cfg.LogLevel))
	if err != nil {
		return startupError(ctx, err)
	}
	defer a.Close()
	p, err := e.assemble(ctx, a)
	if err != nil {
		return startupError(ctx, err)
	}
	return a.Run(ctx, p)
}

// stoppedDuringStartup is a start-up error that came of ctx ending: a
// signal while start-up was waiting or working.
type stoppedDuringStartup struct{ error }

func (e stoppedDuringStartup) Unwrap() error { return e.error }

// startupError marks err as stoppedDuringStartup when ctx has ended.
func startupError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return stoppedDuringStartup{err}
	}
	return err
}
