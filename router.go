package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/heartbeat/heartbeat/handlers"
	"github.com/heartbeat/heartbeat/messages"
	hbmw "github.com/heartbeat/heartbeat/middleware"
)

// The pipeline's topology. ROUTER_HANDLERS picks the handlers a process
// runs; the topic and group names are the defaults of the KAFKA_*
// variables:
//
//	simulate ──► events.raw.v1 (24 partitions, key = customer id)
//	events.raw.v1 ──► persist (cg.db-writer.v1) ──► heartbeat_events + ingest_checkpoint (one transaction)
//	                                            ├──► events.invalid.v1  schema and domain failures
//	                                            └──► events.dlq.v1      unexpected failures, after retries
//	events.raw.v1 ──► detect  (cg.anomaly.v1)   ──► anomalies + outbox (one transaction) ──forwarder──► events.anomaly.v1
//	                                            ├──► customer_history   the readings evaluated, before each commit of the group's offsets
//	                                            └──► events.dlq.v1
//
// This file declares the router: its handlers with the topics they read and
// write, and its middleware in the order a message meets it.
// pipeline.go assembles the rest around it — publishers, subscribers,
// storage, the simulator, the outbox forwarder, the background jobs.

// wiring is what the router is built from: the handlers ready, where they
// read and publish, and the process's configuration and metrics. A nil
// handler is not run. Tests build it with Watermill's GoChannel pub/sub.
type wiring struct {
	cfg      config.Config
	metrics  *telemetry.Metrics
	registry prometheus.Registerer
	log      *slog.Logger
	wlog     watermill.LoggerAdapter
	// pub publishes invalid envelopes and poisoned messages.
	pub message.Publisher
	// persistSub delivers many batch messages of a partition at once (their
	// COPY batches fill); detectSub one at a time, in order (the rules need
	// partition order).
	persistSub, detectSub func(group string) (message.Subscriber, error)
	persist, detect       handlers.BatchHandler
}

// router declares the handlers and their middleware; closers close the
// subscribers, waiting for their last commit, once the router has stopped.
func (w wiring) router() (router *message.Router, closers []func(context.Context), err error) {
	cfg, m, topics := w.cfg, w.metrics, w.cfg.Kafka
	if router, err = message.NewRouter(message.RouterConfig{CloseTimeout: cfg.ShutdownTimeout}, w.wlog); err != nil {
		return nil, nil, err
	}
	// Poisoned messages go to the DLQ topic with Watermill's reason_poisoned,
	// topic_poisoned and handler_poisoned headers, cut to the broker's limit.
	dlq := hbmw.BoundedPublisher{Publisher: hbmw.PoisonCounter{Publisher: w.pub, Poisoned: m.DLQ}, MaxBytes: kafka.MaxMessageBytes - 16<<10}
	poison, err := wmmw.PoisonQueueWithFilter(dlq, topics.TopicDLQ,
		func(err error) bool { return !hbmw.IsTransient(err) && !hbmw.IsSplit(err) })
	if err != nil {
		return nil, nil, err
	}
	retry := func(handler string) message.HandlerMiddleware {
		retries := m.Retries.WithLabelValues(handler)
		return wmmw.Retry{MaxRetries: cfg.Retry.MaxRetries, InitialInterval: cfg.Retry.InitialInterval,
			MaxInterval: cfg.Retry.MaxInterval, Multiplier: 2, Logger: w.wlog,
			ShouldRetry: func(p wmmw.RetryParams) bool {
				if hbmw.IsSplit(p.Err) {
					return false
				}
				if p.RetryNum < cfg.Retry.MaxRetries {
					retries.Inc()
				}
				return true
			}}.Middleware
	}
	backpressure := &hbmw.Backpressure{InitialInterval: cfg.Retry.InitialInterval, MaxInterval: cfg.Retry.MaxInterval,
		Logger: w.log, Failures: m.TransientFails, Paused: m.PausedSeconds}

	// Every message, outermost first:
	router.AddMiddleware(
		// handler execution time and outcome (heartbeat_handler_execution_time_seconds);
		// not AddPrometheusRouterMetrics, whose subscriber decorator starts a goroutine per message
		metrics.NewPrometheusMetricsBuilder(w.registry, "heartbeat", "").NewRouterMiddleware().Middleware,
		// readings received, by handler: a batch message counts its records
		hbmw.Consumed(m.Consumed),
		// a message from an outside producer gets a correlation id, so its poison message has one
		hbmw.CorrelationID(watermill.NewUUID),
		// after its retries, a message failing on its own goes to the DLQ and is acked;
		// infrastructure failures and batches being split pass by
		poison,
	)
	// Then, for each handler:
	perHandler := func(name string) []message.HandlerMiddleware {
		m.InitHandler(name)
		return []message.HandlerMiddleware{
			// bounded exponential backoff; a batch being split is not retried
			retry(name),
			// a failed batch message is nacked and its records come again one by one,
			// so that a bad record is retried and poisoned alone
			hbmw.SplitBatches,
			// database or broker unreachable: wait it out, nothing retried to death or poisoned
			backpressure.Middleware,
			// a panic is an error like any other: retried, then poisoned
			wmmw.Recoverer,
		}
	}

	if w.persist != nil {
		sub, err := w.persistSub(topics.GroupDB)
		if err != nil {
			return nil, closers, err
		}
		closers = append(closers, func(context.Context) { _ = sub.Close() })
		// events.raw.v1 → heartbeat_events + ingest_checkpoint, events.invalid.v1, events.dlq.v1
		h := router.AddConsumerHandler(config.HandlerPersist, topics.TopicRaw, sub, handlers.Handler(w.persist))
		h.AddMiddleware(perHandler(config.HandlerPersist)...)
		// innermost: the records the handler refused go to events.invalid.v1 as envelopes, never retried
		h.AddMiddleware(hbmw.InvalidEvents{Publisher: w.pub, Topic: topics.TopicInvalid, Now: time.Now, NewID: watermill.NewUUID,
			OnRouted: func(handler string, class messages.Class) { m.Invalid.WithLabelValues(handler, string(class)).Inc() },
		}.Middleware)
	}
	if w.detect != nil {
		sub, err := w.detectSub(topics.GroupAnomaly)
		if err != nil {
			return nil, closers, err
		}
		closers = append(closers, func(context.Context) { _ = sub.Close() })
		// events.raw.v1 → anomalies + outbox (→ events.anomaly.v1 by the forwarder), events.dlq.v1
		h := router.AddConsumerHandler(config.HandlerDetect, topics.TopicRaw, sub, handlers.Handler(w.detect))
		h.AddMiddleware(perHandler(config.HandlerDetect)...)
	}
	return router, closers, nil
}
