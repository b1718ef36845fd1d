package main

import (
	"context"
	"math"
	"math/rand/v2"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"

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

// newPipeline assembles what ROUTER_HANDLERS asks for on a's
// infrastructure (an [app.Assemble]): the simulator, the router of
// router.go with its handlers and their storage, the outbox forwarder, and
// the background jobs. Start-up work (partitions, the outbox tables) ends
// with ctx. On error, what was opened is closed before it returns.
func newPipeline(ctx context.Context, a *app.App) (_ *app.Pipeline, err error) {
	cfg, m, log := a.Config, a.Metrics, a.Log
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
	// heartbeat_publish_time_seconds{success}: a failure to publish an
	// envelope, a poisoned message or an anomaly is otherwise a log line.
	pub, err := metrics.NewPrometheusMetricsBuilder(a.Registry, "heartbeat", "").DecoratePublisher(kafkaPub)
	if err != nil {
		return nil, err
	}

	if cfg.Runs(config.HandlerSimulate) {
		sim, err := newSimulator(a, p)
		if err != nil {
			return nil, err
		}
		p.Add(app.Runner{Name: config.HandlerSimulate, Run: sim.Run, StopsFirst: true,
			Ends: !cfg.Runs(config.HandlerPersist) && !cfg.Runs(config.HandlerDetect)})
	}
	if !cfg.Runs(config.HandlerPersist) && !cfg.Runs(config.HandlerDetect) {
		return p, nil
	}

	w := wiring{cfg: cfg, metrics: m, registry: a.Registry, log: log, wlog: a.WLogger, pub: pub,
		persistSub: a.Kafka.NewWindowedSubscriber}
	routerDone := make(chan struct{}) // closed once no handler can write any more
	if cfg.Runs(config.HandlerPersist) {
		if w.persist, err = newPersist(ctx, a, p); err != nil {
			return nil, err
		}
	}
	if cfg.Runs(config.HandlerDetect) {
		history := hbsql.NewHistoryWriter(a.Pool)
		if w.detect, err = newDetector(a, p, history); err != nil {
			return nil, err
		}
		// The history of the readings detect evaluated is written before
		// each commit of its offsets: they never pass a reading whose
		// history is not written.
		w.detectSub = func(group string) (message.Subscriber, error) {
			return a.Kafka.NewOrderedSubscriber(group, history.Flush)
		}
		fwd, err := hbsql.NewForwarder(ctx, a.Pool, pub, hbsql.ForwarderConfig{Poll: cfg.OutboxPoll,
			ShutdownTimeout: cfg.ShutdownTimeout, Log: log, WLog: a.WLogger})
		if err != nil {
			return nil, err
		}
		p.Add(app.Runner{Name: "outbox forwarder", Run: func(ctx context.Context) error { return fwd.Run(ctx, routerDone) }},
			app.Runner{Name: "outbox watch", Run: telemetry.OutboxWatch{
				Backlog: func(ctx context.Context) (int64, time.Duration, error) { return hbsql.OutboxBacklog(ctx, a.Pool) },
				Topic:   cfg.Kafka.TopicAnomaly, StallAfter: cfg.Health.StallAfter, Interval: 5 * time.Second,
				Registry: a.Registry, Health: a.Health, Log: log,
			}.Run},
			app.Every("outbox pruning", time.Minute, func(ctx context.Context) {
				if _, err := hbsql.PruneOutbox(ctx, a.Pool, 10*time.Minute); err != nil && ctx.Err() == nil {
					log.Warn("outbox pruning failed", "err", err)
				}
			}))
	}
	router, closers, err := w.router()
	for _, c := range closers {
		p.OnClose(c)
	}
	if err != nil {
		return nil, err
	}
	var groups []string
	for _, h := range []struct{ name, group string }{{config.HandlerPersist, cfg.Kafka.GroupDB}, {config.HandlerDetect, cfg.Kafka.GroupAnomaly}} {
		if cfg.Runs(h.name) {
			groups = append(groups, h.group)
		}
	}
	if a.OwnsBrokerData() {
		// The records of the in-process broker die with the process: on a
		// signal the simulator stops first and the consumers catch up.
		p.Drain = func(ctx context.Context) error {
			log.Info("stopping: consuming what the in-process broker holds first")
			return a.Kafka.WaitConsumed(ctx, cfg.Kafka.TopicRaw, 50*time.Millisecond, groups...)
		}
	}
	p.Add(app.Runner{Name: "router", Run: func(ctx context.Context) error {
		defer close(routerDone)
		return router.Run(ctx)
	}}, app.Runner{Name: "consumer lag", Run: func(ctx context.Context) error {
		return a.Kafka.WatchLag(ctx, kafka.LagWatch{Groups: groups, Interval: 5 * time.Second,
			StallAfter: cfg.Health.StallAfter, Registry: a.Registry, Health: a.Health, Log: log})
	}})
	return p, nil
}

// newSimulator returns the simulate handler: a Watermill publisher of
// simulated readings to the raw topic, held back by SIM_MAX_LAG.
func newSimulator(a *app.App, p *app.Pipeline) (*simulate.Simulator, error) {
	sc, m := a.Config.Sim, a.Metrics
	pub, err := a.Kafka.NewBulkPublisher()
	if err != nil {
		return nil, err
	}
	p.OnClose(func(context.Context) { _ = pub.Close() })
	seed := sc.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	a.Log.Info("simulator", "seed", seed, "customers", sc.CustomerCount, "events_per_s", sc.EventsPerSecond,
		"total", sc.TotalEvents, "invalid_ratio", sc.InvalidRatio)
	sim := &simulate.Simulator{
		Generator: simulate.NewGenerator(simulate.GeneratorConfig{Customers: sc.CustomerCount, Seed: seed,
			InvalidRatio: sc.InvalidRatio, LateRatio: sc.LateRatio, AnomalyRatio: sc.AnomalyRatio}),
		Publisher: pub, Topic: a.Config.Kafka.TopicRaw,
		Rate: sc.EventsPerSecond, BurstMultiplier: sc.BurstMultiplier, Bursts: simulate.NewBurstSchedule(seed),
		Total: sc.TotalEvents, Publishers: sc.Publishers,
		OnPublished: func(simulate.Event) { m.Produced.Inc() },
		OnError:     func(error) { m.ProduceErrors.Inc() },
		Logger:      a.Log,
	}
	if sc.MaxLag > 0 {
		lag, closeLag, err := a.Kafka.GroupLag(a.Config.Kafka.GroupDB, a.Config.Kafka.TopicRaw)
		if err != nil {
			return nil, err
		}
		p.OnClose(func(context.Context) { closeLag() })
		sim.Throttle = simulate.MaxLag(a.Log, lag, sc.MaxLag)
	}
	return sim, nil
}

// newPersist returns the persist handler: its batcher writing COPY batches
// with the checkpoint, and the daily partitions of heartbeat_events
// maintained.
func newPersist(ctx context.Context, a *app.App, p *app.Pipeline) (*handlers.Persist, error) {
	cfg, m, log := a.Config, a.Metrics, a.Log
	events := hbsql.NewEventWriter(a.Pool, cfg.Kafka.GroupDB)
	if err := events.Partitions.Maintain(ctx, time.Now(), cfg.Persist.RetentionDays, log); err != nil {
		return nil, err
	}
	p.Add(app.Every("partition maintenance", time.Hour, func(ctx context.Context) {
		if err := events.Partitions.Maintain(ctx, time.Now(), cfg.Persist.RetentionDays, log); err != nil && ctx.Err() == nil {
			log.Warn("partition maintenance", "err", err)
		}
	}))
	batcher := handlers.NewBatcher(persistBatching(cfg), handlers.EventWrite(events.Write, func(rows, inserted int, took time.Duration) {
		m.DBInserts.Add(float64(inserted))
		m.BatchRows.Observe(float64(rows))
		m.BatchSeconds.Observe(took.Seconds())
	}))
	p.OnClose(batcher.Close)
	return handlers.NewPersist(cfg.Validation.Limits(), batcher, time.Now)
}

// persistOrderDelay bounds how long persist's batches take older readings
// before a batch waiting since: see persistBatching.
const persistOrderDelay = time.Second

// persistBatching is how persist gathers readings into batches: by
// PERSIST_BATCH_SIZE and PERSIST_BATCH_TIMEOUT, on PERSIST_WRITERS
// connections, the readings waiting taken oldest first. A backlog's
// partitions are consumed unevenly, minutes of event time apart; taken in
// time order, each batch's keys of heartbeat_events (event_time,
// event_id) go near the end of the index instead of all over its last
// minutes (docs/performance.md). A batch failing for one bad reading is
// retried piece by piece.
func persistBatching(cfg config.Config) handlers.BatcherConfig[messages.Ingest] {
	return handlers.BatcherConfig[messages.Ingest]{
		Size: cfg.Persist.BatchSize, Timeout: cfg.Persist.BatchTimeout, Writers: cfg.Persist.Writers,
		Isolate:  func(err error) bool { return !hbmw.IsTransient(err) },
		Order:    firstReadingTime,
		MaxDelay: persistOrderDelay,
	}
}

// firstReadingTime is the time of the first reading of rows, in µs since
// 1970 (a batch message's readings are in offset order); rows that are all
// refused, holding only checkpoints, come first.
func firstReadingTime(rows []messages.Ingest) int64 {
	for _, r := range rows {
		if !r.Refused {
			return r.Reading.Timestamp.UnixMicro()
		}
	}
	return math.MinInt64
}

// newDetector returns the detect handler of DETECTION_MODE, keeping the
// readings it evaluates in kept and rebuilding a customer's state from
// them; idle customers' state is evicted after DETECT_STATE_TTL.
func newDetector(a *app.App, p *app.Pipeline, kept *hbsql.HistoryWriter) (handlers.BatchHandler, error) {
	cfg, m := a.Config, a.Metrics
	m.InitAnomalies(cfg.Detection.Mode)
	history := hbsql.NewHistory(a.Pool, cfg.Anomaly.StateTTL)
	store := hbsql.NewAnomalyWriter(a.Pool, a.WLogger)
	observe := handlers.Observer{
		Anomaly: func(an messages.Anomaly) { m.Anomalies.WithLabelValues(an.Type, an.Severity).Inc() },
		History: func(outcome string) { m.StateRestores.WithLabelValues(outcome).Inc() },
	}
	var d interface {
		handlers.BatchHandler
		Evict(idle time.Duration) int
	}
	var err error
	if cfg.Detection.Mode == rules.ModePerEvent {
		engine := rules.NewEngine(rules.Thresholds{Low: cfg.Anomaly.LowThreshold, High: cfg.Anomaly.HighThreshold, SpikeDelta: cfg.Anomaly.SpikeDelta})
		d, err = handlers.NewDetect(handlers.DetectConfig{Limits: cfg.Validation.Limits(), Engine: engine, Store: store, History: history,
			Kept: kept, Topic: cfg.Kafka.TopicAnomaly, Now: time.Now, NewID: watermill.NewUUID, Log: a.Log, Observe: observe})
	} else {
		engine, eerr := rules.NewEpisodeEngine(cfg.Detection.EpisodeParams(cfg.Anomaly))
		if eerr != nil {
			return nil, eerr
		}
		d, err = handlers.NewDetectEpisodes(handlers.DetectEpisodesConfig{Limits: cfg.Validation.Limits(), Engine: engine, Store: store,
			History: hbsql.NewEpisodeHistory(history), Kept: kept, Topic: cfg.Kafka.TopicAnomaly, Now: time.Now, NewID: watermill.NewUUID,
			Log: a.Log, Observe: observe})
	}
	if err != nil {
		return nil, err
	}
	p.Add(app.Every("detector state eviction", min(cfg.Anomaly.StateTTL/4, time.Minute), func(context.Context) { d.Evict(cfg.Anomaly.StateTTL) }))
	return d, nil
}
