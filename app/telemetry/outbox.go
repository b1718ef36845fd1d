package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// OutboxWatch watches a transactional outbox: the messages committed with
// their rows and not yet forwarded to Kafka.
type OutboxWatch struct {
	// Backlog reads how many messages wait and how long the oldest has.
	Backlog func(ctx context.Context) (n int64, oldest time.Duration, err error)
	// Topic is where the forwarder publishes them (for the reasons given).
	Topic      string
	StallAfter time.Duration
	Interval   time.Duration
	Registry   prometheus.Registerer
	Health     *Health
	Log        *slog.Logger
}

// Run reads the backlog every Interval until ctx ends:
// heartbeat_outbox_unforwarded_messages and
// heartbeat_outbox_oldest_unforwarded_seconds. When a committed message has
// waited StallAfter without being forwarded, the outbox is stalled: a WARN
// line, /healthz failing with the reason, until it drains (an INFO line).
// The rows are stored; what is late is their message on Topic, which is
// what downstream alerting reads.
func (o OutboxWatch) Run(ctx context.Context) error {
	pending := prometheus.NewGauge(prometheus.GaugeOpts{Name: "heartbeat_outbox_unforwarded_messages",
		Help: "Anomaly messages committed to the outbox table and not yet forwarded to Kafka."})
	oldest := prometheus.NewGauge(prometheus.GaugeOpts{Name: "heartbeat_outbox_oldest_unforwarded_seconds",
		Help: "How long the oldest anomaly message not yet forwarded to Kafka has waited in the outbox (0 when none waits)."})
	for _, c := range []prometheus.Collector{pending, oldest} {
		if err := o.Registry.Register(c); err != nil {
			return err
		}
	}
	w := outboxWatch{OutboxWatch: o, lastRead: time.Now()}
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, o.Interval)
		n, age, err := o.Backlog(qctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			pending.Set(float64(n))
			oldest.Set(age.Seconds())
		}
		w.observe(n, age, err, time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// outboxWatch turns backlog reads into the stall's log lines and health.
type outboxWatch struct {
	OutboxWatch

	stalled    bool
	since      time.Time // when the stall was first reported
	lastRead   time.Time
	unreadable bool
}

const outboxCheck = "outbox"

func (w *outboxWatch) observe(n int64, age time.Duration, err error, now time.Time) {
	log, after := w.Log, w.StallAfter
	if err != nil {
		// An outbox that cannot be read could hide a stall: report it
		// when it lasts as long as one.
		if now.Sub(w.lastRead) >= after {
			if !w.unreadable {
				log.Warn("outbox backlog cannot be read", "for", now.Sub(w.lastRead).Round(time.Second), "err", err)
				w.unreadable = true
			}
			w.Health.Set(outboxCheck+" read", fmt.Sprintf("the outbox backlog cannot be read for %s: %v", now.Sub(w.lastRead).Round(time.Second), err))
		}
		return
	}
	w.lastRead = now
	if w.unreadable {
		log.Info("outbox backlog readable again")
		w.Health.Set(outboxCheck+" read", "")
		w.unreadable = false
	}
	if age < after {
		if w.stalled {
			log.Info("outbox forwarding again", "stalled_for", now.Sub(w.since).Round(time.Second), "unforwarded", n)
			w.Health.Set(outboxCheck, "")
			w.stalled = false
		}
		return
	}
	if !w.stalled {
		w.stalled, w.since = true, now
		log.Warn("outbox not forwarding: committed anomalies are not reaching Kafka",
			"unforwarded", n, "oldest", age.Round(time.Second), "topic", w.Topic)
	}
	w.Health.Set(outboxCheck, fmt.Sprintf("outbox not forwarding: %d committed anomaly messages wait for %s, the oldest for %s (STALL_AFTER %s)",
		n, w.Topic, age.Round(time.Second), after))
}
