// Package app holds everything the pipeline needs around its router:
// configuration from the environment, the Kafka cluster (a real one or the
// in-process broker), topics, PostgreSQL and its migrations, metrics, logs,
// the progress summary and the process lifecycle. The router itself is
// wired in router.go at the repository root.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// App is the process's shared infrastructure.
type App struct {
	Config   Config
	Log      *slog.Logger
	WLogger  watermill.LoggerAdapter
	Registry *prometheus.Registry
	Metrics  *Metrics
	// Health is what /healthz reports: the stall watchers' problems.
	Health *Health
	// Brokers is the Kafka bootstrap list in use: KAFKA_BOOTSTRAP_SERVERS, or
	// the in-process broker's address.
	Brokers []string
	// KafkaOpts are the franz-go options for KAFKA_SECURITY_PROTOCOL & co.
	KafkaOpts []kgo.Opt
	// Pool is nil when the process runs neither persist nor detect.
	Pool *pgxpool.Pool

	broker *Broker
	// metricsLn is METRICS_ADDR's listener, opened by New and served by Run.
	metricsLn net.Listener
}

// NewLogger returns the process logger at level (debug, info, warn, error).
func NewLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// New connects the infrastructure cfg asks for: the metrics listener,
// Kafka (starting the in-process broker when KAFKA_BOOTSTRAP_SERVERS is
// empty) with its topics, and, when persist or detect runs, PostgreSQL with
// its migrations. It waits up to STARTUP_TIMEOUT for Kafka, and as long for
// PostgreSQL, to be reachable, and stops when ctx ends.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	a := &App{
		Config:   cfg,
		Log:      log,
		WLogger:  NewWatermillLogger(log),
		Registry: NewRegistry(),
		Health:   NewHealth(),
		Brokers:  cfg.Kafka.BootstrapServers,
	}
	a.Metrics = NewMetrics(a.Registry)
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()

	opts, err := cfg.Kafka.Security.FranzOpts()
	if err != nil {
		return nil, err
	}
	a.KafkaOpts = opts
	// A taken port fails start-up at once, before anything connects.
	if a.metricsLn, err = ListenMetrics(cfg.EffectiveMetricsAddr()); err != nil {
		return nil, err
	}
	if len(a.Brokers) == 0 {
		c, err := StartBroker("127.0.0.1:0", "", log)
		if err != nil {
			return nil, err
		}
		a.broker = c
		a.Brokers = c.ListenAddrs()
		log.Info("KAFKA_BOOTSTRAP_SERVERS is empty: started an in-process Kafka broker (kfake)", "addr", strings.Join(a.Brokers, ","))
	}
	tctx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	if err := EnsureTopics(tctx, a.Brokers, a.KafkaOpts, cfg.Kafka.ReplicationFactor, cfg.Kafka.Topics(), log); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("creating the Kafka topics: %w", context.Cause(ctx))
		}
		var refused *RefusedError
		if errors.As(err, &refused) {
			return nil, err
		}
		return nil, fmt.Errorf("KAFKA_BOOTSTRAP_SERVERS: cannot reach Kafka at %s within STARTUP_TIMEOUT (%s): %w", strings.Join(a.Brokers, ","), cfg.StartupTimeout, err)
	}
	if cfg.Runs(HandlerPersist) || cfg.Runs(HandlerDetect) {
		pool, err := openDatabase(ctx, cfg.Postgres, cfg.StartupTimeout, log)
		if err != nil {
			return nil, err
		}
		a.Pool = pool
	}
	ok = true
	return a, nil
}

// Close releases what New opened.
func (a *App) Close() {
	if a.metricsLn != nil {
		_ = a.metricsLn.Close()
	}
	if a.Pool != nil {
		a.Pool.Close()
	}
	if a.broker != nil {
		a.broker.Close()
	}
}
