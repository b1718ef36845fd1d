package app

import (
	"context"
	"strconv"
	"sync"
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

// GroupProgress returns a function answering the next offset group has
// committed for a partition of topic, read from the broker at most every
// 100 ms (the detector asks it for every customer it rebuilds).
func (a *App) GroupProgress(group string) (func(ctx context.Context, topic string, partition int32) (int64, error), func(), error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(a.Brokers...)}, a.KafkaOpts...)...)
	if err != nil {
		return nil, nil, err
	}
	adm := kadm.NewClient(cl)
	var (
		mu      sync.Mutex
		fetched time.Time
		offsets kadm.OffsetResponses
	)
	progress := func(ctx context.Context, topic string, partition int32) (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(fetched) > 100*time.Millisecond {
			o, err := adm.FetchOffsets(ctx, group)
			if err != nil {
				return 0, err
			}
			offsets, fetched = o, time.Now()
		}
		if o, ok := offsets.Lookup(topic, partition); ok && o.Err == nil {
			return o.At, nil
		}
		return 0, nil
	}
	return progress, cl.Close, nil
}
