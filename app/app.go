// Package app is the process around the router: [New] connects the
// infrastructure the configuration asks for — Kafka (a cluster, or the
// in-process broker), PostgreSQL, the metrics listener — and [App.Run] runs
// the pipeline's parts until a signal, then stops them within
// SHUTDOWN_TIMEOUT. Its subpackages hold one concern each: config (the
// environment), kafka (broker, clients, lag), telemetry (metrics, health,
// progress, logs), cli (the commands), and the tools the commands run.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/app/telemetry"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// App is the process's shared infrastructure.
type App struct {
	Config   config.Config
	Log      *slog.Logger
	WLogger  watermill.LoggerAdapter
	Registry *prometheus.Registry
	Metrics  *telemetry.Metrics
	// Health is what /healthz reports: the stall watchers' problems.
	Health *telemetry.Health
	// Kafka opens clients of the cluster in use.
	Kafka *kafka.Client
	// Pool is nil when the process runs neither persist nor detect.
	Pool *pgxpool.Pool

	broker *kafka.Broker
	// metricsLn is METRICS_ADDR's listener, opened by New and served by Run.
	metricsLn net.Listener
}

// New connects the infrastructure cfg asks for: the metrics listener,
// Kafka (starting the in-process broker when KAFKA_BOOTSTRAP_SERVERS is
// empty) with its topics, and, when persist or detect runs, PostgreSQL with
// its migrations. It waits up to STARTUP_TIMEOUT for Kafka, and as long for
// PostgreSQL, to be reachable, and stops when ctx ends.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	a := &App{
		Config:   cfg,
		Log:      log,
		WLogger:  telemetry.NewWatermillLogger(log),
		Registry: telemetry.NewRegistry(),
		Health:   telemetry.NewHealth(),
	}
	a.Metrics = telemetry.NewMetrics(a.Registry)
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()

	var err error
	// A taken port fails start-up at once, before anything connects.
	if a.metricsLn, err = telemetry.ListenMetrics(cfg.EffectiveMetricsAddr()); err != nil {
		return nil, err
	}
	brokers := cfg.Kafka.BootstrapServers
	if len(brokers) == 0 {
		b, err := kafka.StartBroker("127.0.0.1:0", "", log)
		if err != nil {
			return nil, err
		}
		a.broker = b
		brokers = b.ListenAddrs()
		log.Info("KAFKA_BOOTSTRAP_SERVERS is empty: started an in-process Kafka broker (kfake)", "addr", strings.Join(brokers, ","))
	}
	if a.Kafka, err = kafka.NewClient(brokers, cfg, log, a.WLogger); err != nil {
		return nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	if err := kafka.EnsureTopics(tctx, brokers, a.Kafka.Opts(), cfg.Kafka.ReplicationFactor, kafka.Topics(cfg.Kafka), log); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("creating the Kafka topics: %w", context.Cause(ctx))
		}
		var refused *kafka.RefusedError
		if errors.As(err, &refused) {
			return nil, err
		}
		return nil, fmt.Errorf("KAFKA_BOOTSTRAP_SERVERS: cannot reach Kafka at %s within STARTUP_TIMEOUT (%s): %w", strings.Join(brokers, ","), cfg.StartupTimeout, err)
	}
	if cfg.Runs(config.HandlerPersist) || cfg.Runs(config.HandlerDetect) {
		pool, err := hbsql.Open(ctx, hbsql.OpenOptions{ConnString: cfg.Postgres.ConnString(), MaxConns: cfg.Postgres.MaxConns,
			Timeout: cfg.StartupTimeout, Settings: cfg.Postgres.Variables(), Log: log})
		if err != nil {
			return nil, err
		}
		a.Pool = pool
	}
	ok = true
	return a, nil
}

// OwnsBrokerData reports whether the process runs the Kafka broker itself
// (KAFKA_BOOTSTRAP_SERVERS empty), holding its records in memory: what its
// consumers have not consumed when it stops is gone.
func (a *App) OwnsBrokerData() bool { return a.broker != nil }

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
