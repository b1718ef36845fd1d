package app

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ConsumerLag exports heartbeat_consumer_lag{group,topic,partition}: how many
// records each of groups has still to consume, from the broker's end
// offsets and the group's committed offsets, refreshed every interval.
func (a *App) ConsumerLag(ctx context.Context, groups []string, interval time.Duration) error {
	gauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "heartbeat_consumer_lag",
		Help: "Records of a partition not yet consumed by a group: end offset minus the group's committed offset.",
	}, []string{"group", "topic", "partition"})
	if err := a.Registry.Register(gauge); err != nil {
		return err
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(a.Brokers...)}, a.KafkaOpts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, interval)
		lags, err := adm.Lag(qctx, groups...)
		cancel()
		if err != nil && ctx.Err() == nil {
			a.Log.Debug("consumer lag not available", "err", err)
		}
		for group, l := range lags {
			for topic, parts := range l.Lag {
				for p, m := range parts {
					if m.Err == nil && m.Lag >= 0 {
						gauge.WithLabelValues(group, topic, strconv.Itoa(int(p))).Set(float64(m.Lag))
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
