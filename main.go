// Command heartbeat runs the heart-rate pipeline: `heartbeat` runs the
// handlers ROUTER_HANDLERS selects, `heartbeat broker` runs only the
// in-process Kafka broker. Configuration comes from the environment; see
// README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/heartbeat/heartbeat/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "heartbeat:", app.Redact(err.Error()))
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	cfg, err := app.LoadConfig(ctx, nil)
	if err != nil {
		return err
	}
	log := app.NewLogger(cfg.LogLevel)
	switch {
	case len(args) == 0:
	case args[0] == "broker" && len(args) == 1:
		return app.RunBroker(ctx, cfg, log)
	default:
		return fmt.Errorf("unknown command %q; usage: heartbeat [broker]", args)
	}
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	p, err := newPipeline(a)
	if err != nil {
		return err
	}
	return a.Run(ctx, p.Runners, p.Cleanup)
}
