package app

import (
	"context"
	"fmt"
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

// GroupLag returns a function answering how many records of topic group
// has still to consume (end offsets minus committed offsets, summed over
// partitions), read from the broker at most every 100 ms.
func (a *App) GroupLag(group, topic string) (func(ctx context.Context) (int64, error), func(), error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(a.Brokers...)}, a.KafkaOpts...)...)
	if err != nil {
		return nil, nil, err
	}
	adm := kadm.NewClient(cl)
	var (
		mu      sync.Mutex
		fetched time.Time
		total   int64
	)
	lag := func(ctx context.Context) (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(fetched) <= 100*time.Millisecond {
			return total, nil
		}
		lags, err := adm.Lag(ctx, group)
		if err != nil {
			return 0, err
		}
		var sum int64
		for _, l := range lags {
			if l.Error() != nil {
				return 0, l.Error()
			}
			for p, m := range l.Lag[topic] {
				if m.Err != nil {
					return 0, fmt.Errorf("lag of %s/%d: %w", topic, p, m.Err)
				}
				sum += max(m.Lag, 0)
			}
		}
		total, fetched = sum, time.Now()
		return total, nil
	}
	return lag, cl.Close, nil
}
