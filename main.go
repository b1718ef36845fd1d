// Command heartbeat runs the heart-rate pipeline: `heartbeat` runs the
// handlers ROUTER_HANDLERS selects, `heartbeat broker` runs only the
// in-process Kafka broker, `heartbeat dlq list|replay` inspects and replays
// the poison queue, `heartbeat replay FILE.csv` publishes a recording,
// `heartbeat evaluate` scores the detector, `heartbeat bench` measures the
// pipeline, `heartbeat healthcheck URL` probes a service's
// /healthz (for container health checks, where there is no curl).
// Configuration comes from the environment; see README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	hbsql "github.com/heartbeat/heartbeat/sql"

	"github.com/heartbeat/heartbeat/app"
	"github.com/heartbeat/heartbeat/app/bench"
	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/dashbench"
	"github.com/heartbeat/heartbeat/app/dlq"
	"github.com/heartbeat/heartbeat/app/evaluate"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/app/replay"
	"github.com/heartbeat/heartbeat/app/telemetry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app.FollowGoRun()
	if err := run(ctx, os.Args[1:]); err != nil {
		var stopped stoppedDuringStartup
		if errors.As(err, &stopped) {
			// Asked to stop (SIGINT/SIGTERM) before start-up finished: a
			// stop, not a failure.
			fmt.Fprintln(os.Stderr, "heartbeat: stopped by a signal during start-up")
			return
		}
		fmt.Fprintln(os.Stderr, "heartbeat:", oneLine(hbsql.Redact(err.Error())))
		os.Exit(1)
	}
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

func run(ctx context.Context, args []string) error {
	// Commands that read their own configuration.
	switch {
	case len(args) == 2 && args[0] == "healthcheck":
		return telemetry.HealthCheck(ctx, args[1])
	case len(args) > 0 && args[0] == "replay":
		return replay.Main(ctx, args[1:], os.Stdout, os.Stderr)
	case len(args) > 0 && args[0] == "evaluate":
		return evaluate.Main(ctx, args[1:], os.Stdout, os.Stderr)
	case len(args) > 0 && args[0] == "bench" && !slices.Contains(args, "-dashboards"):
		return bench.Main(ctx, args[1:], os.Stdout, os.Stderr)
	}
	cfg, err := config.LoadConfig(ctx, nil)
	if err != nil {
		return err
	}
	log := telemetry.NewLogger(cfg.LogLevel)
	switch {
	case len(args) == 0:
	case args[0] == "broker" && len(args) == 1:
		return kafka.RunBroker(ctx, cfg, log)
	case args[0] == "bench": // -dashboards
		return dashbench.Main(ctx, cfg.Postgres.DatabaseURL, slices.DeleteFunc(args[1:], func(a string) bool { return a == "-dashboards" }), os.Stdout)
	case args[0] == "dlq":
		// The DLQ tools need only Kafka: the brokers of KAFKA_BOOTSTRAP_SERVERS,
		// or the shared broker of `heartbeat broker`.
		brokers := cfg.Kafka.BootstrapServers
		if len(brokers) == 0 {
			brokers = []string{cfg.Broker.Addr}
		}
		opts, err := kafka.FranzOpts(cfg.Kafka.Security)
		if err != nil {
			return err
		}
		return dlq.Main(ctx, brokers, cfg.Kafka.TopicDLQ, opts, args[1:], os.Stdout)
	default:
		return fmt.Errorf("unknown command %q; usage: heartbeat [broker | dlq list|replay | replay FILE.csv | evaluate | bench [-dashboards] | healthcheck URL]", strings.Join(args, " "))
	}
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		return startupError(ctx, err)
	}
	defer a.Close()
	p, err := newPipeline(ctx, a)
	if err != nil {
		return startupError(ctx, err)
	}
	return a.Run(ctx, p)
}

// oneLine joins a multi-line error (pgx lists each connection attempt on its
// own line; the configuration, each variable in error) into one line,
// dropping repeated lines.
func oneLine(msg string) string {
	var parts []string
	seen := map[string]bool{}
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" && !seen[l] {
			seen[l] = true
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}
