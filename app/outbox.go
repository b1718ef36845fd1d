package app

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	hbsql "github.com/heartbeat/heartbeat/sql"
)

// WatchOutbox reads the outbox backlog every interval until ctx ends:
// heartbeat_outbox_unforwarded_messages and
// heartbeat_outbox_oldest_unforwarded_seconds. When a committed anomaly has
// waited STALL_AFTER without being forwarded to Kafka, the outbox is
// stalled: a WARN line, /healthz failing with the reason, until it drains
// (an INFO line). The anomaly rows are stored; what is late is their
// message on the anomaly topic, which is what downstream alerting reads.
func (a *App) WatchOutbox(ctx context.Context, interval time.Duration) error {
	pending := prometheus.NewGauge(prometheus.GaugeOpts{Name: "heartbeat_outbox_unforwarded_messages",
		Help: "Anomaly messages committed to the outbox table and not yet forwarded to Kafka."})
	oldest := prometheus.NewGauge(prometheus.GaugeOpts{Name: "heartbeat_outbox_oldest_unforwarded_seconds",
		Help: "How long the oldest anomaly message not yet forwarded to Kafka has waited in the outbox (0 when none waits)."})
	for _, c := range []prometheus.Collector{pending, oldest} {
		if err := a.Registry.Register(c); err != nil {
			return err
		}
	}
	health := a.Health
	if health == nil {
		health = NewHealth()
	}
	w := outboxWatch{after: a.Config.Health.StallAfter, app: a, health: health, lastRead: time.Now()}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, interval)
		n, age, err := hbsql.OutboxBacklog(qctx, a.Pool)
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
	after  time.Duration
	app    *App
	health *Health

	stalled    bool
	since      time.Time // when the stall was first reported
	lastRead   time.Time
	unreadable bool
}

const outboxCheck = "outbox"

func (w *outboxWatch) observe(n int64, age time.Duration, err error, now time.Time) {
	log := w.app.Log
	if err != nil {
		// An outbox that cannot be read could hide a stall: report it
		// when it lasts as long as one.
		if now.Sub(w.lastRead) >= w.after {
			if !w.unreadable {
				log.Warn("outbox backlog cannot be read", "for", now.Sub(w.lastRead).Round(time.Second), "err", err)
				w.unreadable = true
			}
			w.health.Set(outboxCheck+" read", fmt.Sprintf("the outbox backlog cannot be read for %s: %v", now.Sub(w.lastRead).Round(time.Second), err))
		}
		return
	}
	w.lastRead = now
	if w.unreadable {
		log.Info("outbox backlog readable again")
		w.health.Set(outboxCheck+" read", "")
		w.unreadable = false
	}
	if age < w.after {
		if w.stalled {
			log.Info("outbox forwarding again", "stalled_for", now.Sub(w.since).Round(time.Second), "unforwarded", n)
			w.health.Set(outboxCheck, "")
			w.stalled = false
		}
		return
	}
	if !w.stalled {
		w.stalled, w.since = true, now
		log.Warn("outbox not forwarding: committed anomalies are not reaching Kafka",
			"unforwarded", n, "oldest", age.Round(time.Second), "topic", w.app.Config.Kafka.TopicAnomaly)
	}
	w.health.Set(outboxCheck, fmt.Sprintf("outbox not forwarding: %d committed anomaly messages wait for %s, the oldest for %s (STALL_AFTER %s)",
		n, w.app.Config.Kafka.TopicAnomaly, age.Round(time.Second), w.after))
}
