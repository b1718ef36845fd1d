package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartbeat/heartbeat/app"
	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/heartbeat/heartbeat/handlers"
	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
	hbmw "github.com/heartbeat/heartbeat/middleware"
	"github.com/heartbeat/heartbeat/simulate"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// newPipeline is the one place that names topics and wires handlers,
// middleware, publishers and subscribers, for the handlers ROUTER_HANDLERS
// selects:
//
//	simulate  ──► raw topic
//	raw topic ──► persist (group KAFKA_CONSUMER_GROUP_DB) ──► heartbeat_events + ingest_checkpoint
//	                                                     ├──► invalid topic (schema/domain failures)
//	                                                     └──► DLQ topic (unexpected failures, after retries)
//	raw topic ──► detect  (group KAFKA_CONSUMER_GROUP_ANOMALY) ──► anomalies + outbox ──forwarder──► anomaly topic
//
// Start-up work (partitions, the outbox schema, group clients) ends with
// ctx. On error, what was opened is closed before it returns.
func newPipeline(ctx context.Context, a *app.App) (_ *app.Pipeline, err error) {
	cfg, m := a.Config, a.Metrics
	topics := cfg.Kafka
	p := &app.Pipeline{}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
			defer cancel()
			p.Cleanup(cctx)
		}
	}()

	kafkaPub, err := a.Kafka.NewPublisher()
	if err != nil {
		return nil, err
	}
	p.OnClose(func(context.Context) { _ = kafkaPub.Close() })
	// Watermill's publisher metrics, heartbeat_publish_time_seconds{success}:
	// invalid envelopes, the poison queue and the outbox forwarder publish
	// through pub, and a failure there is otherwise only a log line.
	pub, err := metrics.NewPrometheusMetricsBuilder(a.Registry, "heartbeat", "").DecoratePublisher(kafkaPub)
	if err != nil {
		return nil, err
	}

	if cfg.Runs(config.HandlerSimulate) {
		simPub, err := a.Kafka.NewBulkPublisher()
		if err != nil {
			return nil, err
		}
		p.OnClose(func(context.Context) { _ = simPub.Close() })
		sim := newSimulator(a, simPub)
		if limit := cfg.Sim.MaxLag; limit > 0 {
			lag, closeLag, err := a.Kafka.GroupLag(topics.GroupDB, topics.TopicRaw)
			if err != nil {
				return nil, err
			}
			p.OnClose(func(context.Context) { closeLag() })
			sim.Throttle = maxLag(a.Log, lag, limit)
		}
		p.Add(app.Runner{Name: config.HandlerSimulate, Run: sim.Run,
			Ends: !cfg.Runs(config.HandlerPersist) && !cfg.Runs(config.HandlerDetect)})
	}
	if !cfg.Runs(config.HandlerPersist) && !cfg.Runs(config.HandlerDetect) {
		return p, nil
	}

	events := hbsql.NewEventWriter(a.Pool, topics.GroupDB)
	if cfg.Runs(config.HandlerPersist) {
		// Today's partition and the next days', before consuming; the
		// writer creates those of other days as their readings arrive.
		if _, err := events.Partitions.EnsureRange(ctx, time.Now(), time.Now().Add(partitionsAhead)); err != nil {
			return nil, err
		}
		p.Add(app.Runner{Name: "partition maintenance", Run: func(ctx context.Context) error {
			every(ctx, time.Hour, func() { maintainPartitions(ctx, a, events.Partitions) })
			return nil
		}})
		if cfg.Persist.RetentionDays > 0 {
			dropExpired(ctx, a, events.Partitions)
		}
	}
	history := hbsql.NewHistory(a.Pool, topics.GroupDB, cfg.Anomaly.StateTTL, cfg.Anomaly.HistoryWait)
	if cfg.Runs(config.HandlerDetect) {
		progress, closeProgress, err := a.Kafka.GroupProgress(topics.GroupDB)
		if err != nil {
			return nil, err
		}
		history.Progress = progress
		p.OnClose(func(context.Context) { closeProgress() })
	}
	engine := newEngine(cfg)
	var episodes *rules.EpisodeEngine
	if cfg.Detection.Mode == rules.ModeEpisode {
		if episodes, err = rules.NewEpisodeEngine(cfg.Detection.EpisodeParams(cfg.Anomaly)); err != nil {
			return nil, err
		}
	}
	anomalies := hbsql.NewAnomalyWriter(a.Pool, a.WLogger)
	w := wiring{
		cfg: cfg, metrics: m, registry: a.Registry, log: a.Log, wlog: a.WLogger, pub: pub,
		subscriber: a.Kafka.NewOrderedSubscriber, batchSubscriber: a.Kafka.NewWindowedSubscriber,
		events:    events.Write,
		anomalies: anomalies,
		history:   history,
		engine:    engine,
		episodes:  episodes, episodeStore: anomalies, episodeHistory: hbsql.NewEpisodeHistory(history),
	}
	routerDone := make(chan struct{}) // closed when the router has stopped
	router, closers, err := w.router()
	for _, c := range closers {
		p.OnClose(c)
	}
	if err != nil {
		return nil, err
	}
	if cfg.Runs(config.HandlerDetect) {
		fwd, err := newForwarder(ctx, a, pub)
		if err != nil {
			return nil, err
		}
		p.Runners = append(p.Runners,
			app.Runner{Name: "outbox forwarder", Run: func(ctx context.Context) error {
				return forwardUntilDrained(ctx, a, fwd, routerDone)
			}},
			app.Runner{Name: "detector state eviction", Run: func(ctx context.Context) error {
				every(ctx, min(cfg.Anomaly.StateTTL/4, time.Minute), func() {
					engine.Evict(cfg.Anomaly.StateTTL)
					if episodes != nil {
						episodes.Evict(cfg.Anomaly.StateTTL)
					}
				})
				return nil
			}},
			app.Runner{Name: "outbox watch", Run: func(ctx context.Context) error {
				return telemetry.OutboxWatch{
					Backlog: func(ctx context.Context) (int64, time.Duration, error) { return hbsql.OutboxBacklog(ctx, a.Pool) },
					Topic:   topics.TopicAnomaly, StallAfter: cfg.Health.StallAfter, Interval: 5 * time.Second,
					Registry: a.Registry, Health: a.Health, Log: a.Log,
				}.Run(ctx)
			}},
			app.Runner{Name: "outbox pruning", Run: func(ctx context.Context) error {
				every(ctx, time.Minute, func() {
					if _, err := hbsql.PruneOutbox(ctx, a.Pool, 10*time.Minute); err != nil && ctx.Err() == nil {
						a.Log.Warn("outbox pruning failed", "err", err)
					}
				})
				return nil
			}})
	}
	var groups []string
	if cfg.Runs(config.HandlerPersist) {
		groups = append(groups, topics.GroupDB)
	}
	if cfg.Runs(config.HandlerDetect) {
		groups = append(groups, topics.GroupAnomaly)
	}
	p.Runners = append(p.Runners,
		app.Runner{Name: "router", Run: func(ctx context.Context) error {
			defer close(routerDone)
			return router.Run(ctx)
		}},
		app.Runner{Name: "consumer lag", Run: func(ctx context.Context) error {
			return a.Kafka.WatchLag(ctx, kafka.LagWatch{Groups: groups, Interval: 5 * time.Second,
				StallAfter: cfg.Health.StallAfter, Registry: a.Registry, Health: a.Health, Log: a.Log})
		}})
	return p, nil
}

// wiring is what the router is built from; tests build it with Watermill's
// GoChannel pub/sub and in-memory stores.
type wiring struct {
	cfg      config.Config
	metrics  *telemetry.Metrics
	registry prometheus.Registerer
	log      *slog.Logger
	wlog     watermill.LoggerAdapter
	pub      message.Publisher
	// subscriber is for ordered delivery (detect: one message per
	// partition at a time, in order); batchSubscriber for persist, whose
	// batches need many messages per partition in flight. Either may deliver
	// batch messages (messages.Batch).
	subscriber      func(group string) (message.Subscriber, error)
	batchSubscriber func(group string) (message.Subscriber, error)
	events          func(context.Context, []hbsql.EventRow) (int64, error)
	anomalies       handlers.AnomalyStore
	history         handlers.History
	engine          *rules.Engine
	// episodes is set in DETECTION_MODE=episode, with its store and history.
	episodes       *rules.EpisodeEngine
	episodeStore   handlers.EpisodeStore
	episodeHistory handlers.EpisodeHistory
}

func newEngine(cfg config.Config) *rules.Engine {
	return rules.NewEngine(rules.Thresholds{Low: cfg.Anomaly.LowThreshold, High: cfg.Anomaly.HighThreshold, SpikeDelta: cfg.Anomaly.SpikeDelta})
}

// router declares the handlers and their middleware.
func (w wiring) router() (router *message.Router, closers []func(context.Context), err error) {
	cfg, m, topics := w.cfg, w.metrics, w.cfg.Kafka
	router, err = message.NewRouter(message.RouterConfig{CloseTimeout: cfg.ShutdownTimeout}, w.wlog)
	if err != nil {
		return nil, nil, err
	}
	// Room for the poison metadata and the record's own overhead.
	dlq := hbmw.BoundedPublisher{Publisher: dlqCounter{w.pub, m}, MaxBytes: kafka.MaxMessageBytes - 16<<10}
	// A batch message's failure is never poisoned whole: it is split into
	// its records (hbmw.SplitBatches), which are.
	poison, err := wmmw.PoisonQueueWithFilter(dlq, topics.TopicDLQ,
		func(err error) bool { return !hbmw.IsTransient(err) && !hbmw.IsSplit(err) })
	if err != nil {
		return nil, nil, err
	}
	// Watermill's handler metrics outermost, so a message counts as a
	// success when it is acked (stored, routed as invalid, or poisoned).
	// Not AddPrometheusRouterMetrics: its subscriber decorator starts a
	// goroutine per message to wait for the ack, thousands at once on
	// persist's path; the handler middleware counts the same outcome.
	if w.registry != nil {
		b := metrics.NewPrometheusMetricsBuilder(w.registry, "heartbeat", "")
		router.AddPublisherDecorators(b.DecoratePublisher)
		router.AddMiddleware(b.NewRouterMiddleware().Middleware)
	}
	// Outermost first; handle() adds the per-handler rest.
	router.AddMiddleware(
		hbmw.Consumed(m.Consumed),
		hbmw.Source,
		hbmw.CorrelationID(watermill.NewUUID),
		wmmw.CorrelationID,
		poison,
	)
	backpressure := &hbmw.Backpressure{InitialInterval: cfg.Retry.InitialInterval, MaxInterval: cfg.Retry.MaxInterval,
		Logger: w.log, Failures: m.TransientFails, Paused: m.PausedSeconds}
	// handle adds the per-handler middleware inside the poison queue: retries
	// (counted by handler); splitting a failed batch message into its
	// records, which Retry does not retry; waiting out outages; and
	// Recoverer — inside Retry, so that a panic is an error like any other:
	// retried, then poisoned, never a stuck partition.
	handle := func(h *message.Handler, name string, inner ...message.HandlerMiddleware) {
		m.InitHandler(name)
		retries := m.Retries.WithLabelValues(name)
		h.AddMiddleware(append([]message.HandlerMiddleware{
			wmmw.Retry{
				MaxRetries:      cfg.Retry.MaxRetries,
				InitialInterval: cfg.Retry.InitialInterval,
				MaxInterval:     cfg.Retry.MaxInterval,
				Multiplier:      2,
				ShouldRetry: func(p wmmw.RetryParams) bool {
					if hbmw.IsSplit(p.Err) {
						return false
					}
					if p.RetryNum < cfg.Retry.MaxRetries {
						retries.Inc()
					}
					return true
				},
				Logger: w.wlog,
			}.Middleware,
			hbmw.SplitBatches,
			backpressure.Middleware,
			wmmw.Recoverer,
		}, inner...)...)
	}

	limits := cfg.Validation.Limits()
	if cfg.Runs(config.HandlerPersist) {
		sub, err := w.batchSubscriber(topics.GroupDB)
		if err != nil {
			return nil, closers, err
		}
		// The router may skip closing a subscriber whose context ended;
		// closing it here waits for its final commit and group leave.
		closers = append(closers, func(context.Context) { _ = sub.Close() })
		batcher := handlers.NewBatcher(handlers.BatcherConfig{
			Size: cfg.Persist.BatchSize, Timeout: cfg.Persist.BatchTimeout, Writers: cfg.Persist.Writers,
			Isolate: func(err error) bool { return !hbmw.IsTransient(err) },
		}, handlers.EventWrite(w.events, func(rows, inserted int, took time.Duration) {
			m.DBInserts.Add(float64(inserted))
			m.BatchRows.Observe(float64(rows))
			m.BatchSeconds.Observe(took.Seconds())
		}))
		closers = append(closers, batcher.Close)
		invalid := hbmw.InvalidEvents{Publisher: w.pub, Topic: topics.TopicInvalid, Now: time.Now,
			OnRouted: func(handler string, class messages.Class) { m.Invalid.WithLabelValues(handler, string(class)).Inc() },
		}
		persist := &handlers.Persist{Limits: limits, Batcher: batcher, Now: time.Now,
			RouteInvalid: invalid.Route, NewCorrelationID: watermill.NewUUID}
		invalid.Settle = persist.Settle
		handle(router.AddConsumerHandler(config.HandlerPersist, topics.TopicRaw, sub, persist.Handle), config.HandlerPersist,
			invalid.Middleware)
	}
	if cfg.Runs(config.HandlerDetect) {
		sub, err := w.subscriber(topics.GroupAnomaly)
		if err != nil {
			return nil, closers, err
		}
		closers = append(closers, func(context.Context) { _ = sub.Close() })
		m.InitAnomalies(cfg.Detection.Mode)
		onAnomaly := func(an messages.Anomaly) { m.Anomalies.WithLabelValues(an.Type, an.Severity).Inc() }
		onHistory := func(outcome string) { m.StateRestores.WithLabelValues(outcome).Inc() }
		var h handlers.RecordHandler
		if w.episodes != nil {
			h = (&handlers.DetectEpisodes{
				Limits: limits, Engine: w.episodes, Store: w.episodeStore, History: w.episodeHistory, AnomalyTopic: topics.TopicAnomaly, Now: time.Now,
				OnAnomaly: onAnomaly, OnHistory: onHistory, Logger: w.log,
			})
		} else {
			h = (&handlers.Detect{
				Limits: limits, Engine: w.engine, Store: w.anomalies, History: w.history, AnomalyTopic: topics.TopicAnomaly, Now: time.Now,
				OnAnomaly: onAnomaly, OnHistory: onHistory, Logger: w.log,
			})
		}
		handle(router.AddConsumerHandler(config.HandlerDetect, topics.TopicRaw, sub, handlers.EachRecord(h, watermill.NewUUID)), config.HandlerDetect)
	}
	return router, closers, nil
}

// newForwarder drains the outbox table to Kafka. Its schema is created here,
// before any handler writes to it inside a transaction.
func newForwarder(ctx context.Context, a *app.App, pub message.Publisher) (*forwarder.Forwarder, error) {
	if err := hbsql.InitOutbox(ctx, a.Pool); err != nil {
		return nil, err
	}
	sub, err := wmsql.NewSubscriber(wmsql.BeginnerFromPgx(a.Pool), wmsql.SubscriberConfig{
		SchemaAdapter:  hbsql.OutboxSchema(),
		OffsetsAdapter: hbsql.OutboxOffsets(),
		PollInterval:   a.Config.OutboxPoll,
	}, a.WLogger)
	if err != nil {
		return nil, fmt.Errorf("outbox subscriber: %w", err)
	}
	return forwarder.NewForwarder(sub, pub, a.WLogger, forwarder.Config{
		ForwarderTopic: hbsql.OutboxTopic,
		CloseTimeout:   a.Config.ShutdownTimeout,
	})
}

// forwardUntilDrained runs the outbox forwarder until ctx ends, and then
// on until the router has stopped (no anomaly can be written any more) and
// the outbox is empty, or half of SHUTDOWN_TIMEOUT has passed. Stopping it
// with ctx would cancel a batch it had already published to Kafka before
// its offset committed, and the restart would publish those again.
func forwardUntilDrained(ctx context.Context, a *app.App, fwd *forwarder.Forwarder, routerDone <-chan struct{}) error {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		<-ctx.Done()
		deadline := time.After(a.Config.ShutdownTimeout / 2)
		select {
		case <-routerDone:
		case <-deadline:
			cancel()
			return
		}
		poll := time.NewTicker(max(a.Config.OutboxPoll, 5*time.Millisecond))
		defer poll.Stop()
		for {
			qctx, qcancel := context.WithTimeout(fctx, time.Second)
			n, err := hbsql.OutboxPending(qctx, a.Pool)
			qcancel()
			if err != nil || n == 0 {
				if err != nil {
					a.Log.Warn("outbox not drained before stopping", "err", err)
				}
				cancel()
				return
			}
			select {
			case <-poll.C:
			case <-deadline:
				a.Log.Warn("outbox not drained before stopping; the rest is forwarded on the next start", "pending", n)
				cancel()
				return
			}
		}
	}()
	return fwd.Run(fctx)
}

func newSimulator(a *app.App, pub message.Publisher) *simulate.Simulator {
	sc := a.Config.Sim
	seed := sc.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	a.Log.Info("simulator", "seed", seed, "customers", sc.CustomerCount, "events_per_s", sc.EventsPerSecond,
		"total", sc.TotalEvents, "invalid_ratio", sc.InvalidRatio)
	m := a.Metrics
	return &simulate.Simulator{
		Generator: simulate.NewGenerator(simulate.GeneratorConfig{
			Customers: sc.CustomerCount, Seed: seed,
			InvalidRatio: sc.InvalidRatio, LateRatio: sc.LateRatio, AnomalyRatio: sc.AnomalyRatio,
		}),
		Publisher: pub, Topic: a.Config.Kafka.TopicRaw,
		Rate: sc.EventsPerSecond, BurstMultiplier: sc.BurstMultiplier, Bursts: simulate.NewBurstSchedule(seed),
		Total: sc.TotalEvents, Publishers: sc.Publishers,
		OnPublished: func(simulate.Event) { m.Produced.Inc() },
		OnError:     func(error) { m.ProduceErrors.Inc() },
		Logger:      a.Log,
	}
}

// maxLag holds the simulator back while lag is above limit, checking every
// 20 ms. A lag it cannot read (the group not there yet, a broker hiccup)
// holds nothing back: the bound is for load tests, not a guarantee.
func maxLag(log *slog.Logger, lag func(context.Context) (int64, error), limit int64) func(context.Context) error {
	warned := false
	return func(ctx context.Context) error {
		for {
			n, err := lag(ctx)
			if err != nil {
				if !warned && ctx.Err() == nil {
					warned = true
					log.Debug("SIM_MAX_LAG: persist's lag not readable; not holding back", "err", err)
				}
				return ctx.Err()
			}
			if n <= limit {
				return nil
			}
			t := time.NewTimer(20 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}

// partitionsAhead is how far ahead of today partition maintenance creates
// daily partitions, so that the day's first readings find theirs.
const partitionsAhead = 2 * 24 * time.Hour

// maintainPartitions creates the coming days' partitions of heartbeat_events
// and drops those past HEARTBEAT_RETENTION_DAYS.
func maintainPartitions(ctx context.Context, a *app.App, parts *hbsql.Partitions) {
	if n, err := parts.EnsureRange(ctx, time.Now(), time.Now().Add(partitionsAhead)); err != nil {
		if ctx.Err() == nil {
			a.Log.Warn("partition maintenance", "err", err)
		}
	} else if n > 0 {
		a.Log.Info("heartbeat_events partitions created", "count", n)
	}
	if a.Config.Persist.RetentionDays > 0 {
		dropExpired(ctx, a, parts)
	}
}

// dropExpired drops the daily partitions past HEARTBEAT_RETENTION_DAYS.
func dropExpired(ctx context.Context, a *app.App, parts *hbsql.Partitions) {
	keep := a.Config.Persist.RetentionDays
	dropped, err := parts.Drop(ctx, time.Now(), keep)
	if err != nil {
		if ctx.Err() == nil {
			a.Log.Warn("retention", "err", err)
		}
	} else if len(dropped) > 0 {
		a.Log.Info("heartbeat_events partitions dropped (retention)", "partitions", dropped, "retention_days", keep)
	}
}

// every calls f every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// dlqCounter counts the messages the poison queue publishes, by handler.
type dlqCounter struct {
	message.Publisher
	m *telemetry.Metrics
}

func (d dlqCounter) Publish(topic string, msgs ...*message.Message) error {
	if err := d.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	for _, msg := range msgs {
		d.m.DLQ.WithLabelValues(msg.Metadata.Get(wmmw.PoisonedHandlerKey)).Inc()
	}
	return nil
}
