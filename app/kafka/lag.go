package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// LagWatch says which consumer groups WatchLag reports on, and where.
type LagWatch struct {
	Groups   []string
	Interval time.Duration
	// StallAfter: a partition with lag whose committed offset has not moved
	// for this long is stalled.
	StallAfter time.Duration
	Registry   prometheus.Registerer
	Health     *telemetry.Health
	Log        *slog.Logger
}

// WatchLag exports heartbeat_consumer_lag{group,topic,partition}: how many
// records each of groups has still to consume, from the broker's end
// offsets and the group's committed offsets, refreshed every interval. From
// the same reads it reports stalls (see groupStalls): a partition with lag
// whose committed offset has not moved for STALL_AFTER is counted in
// heartbeat_consumer_stalled_partitions{group}, logged with its owner, and
// makes /healthz fail until the group progresses again.
func (c *Client) WatchLag(ctx context.Context, w LagWatch) error {
	groups, interval := w.Groups, w.Interval
	gauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "heartbeat_consumer_lag",
		Help: "Records of a partition not yet consumed by a group: end offset minus the group's committed offset.",
	}, []string{"group", "topic", "partition"})
	stalledGauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "heartbeat_consumer_stalled_partitions",
		Help: "Partitions where a group has records to consume and has not committed progress for STALL_AFTER.",
	}, []string{"group"})
	for _, col := range []prometheus.Collector{gauge, stalledGauge} {
		if err := w.Registry.Register(col); err != nil {
			return err
		}
	}
	stalls := make(map[string]*groupStalls, len(groups))
	for _, g := range groups {
		stalls[g] = newGroupStalls(g, w.StallAfter, w.Log, w.Health, stalledGauge.WithLabelValues(g), time.Now())
	}
	adm, closeAdm, err := c.newAdmin()
	if err != nil {
		return err
	}
	defer closeAdm()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, interval)
		// kadm's Lag rewrites the slice of groups it is given, in place
		// (twice when a group cannot be described, which can leave one
		// group in it twice): a fresh copy each call.
		lags, err := adm.Lag(qctx, slices.Clone(groups)...)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			w.Log.Debug("consumer lag not available", "err", err)
		}
		now := time.Now()
		for _, group := range groups {
			l, ok := lags[group]
			switch {
			case ok:
				stalls[group].observe(l, now)
			case err != nil:
				stalls[group].unread(err, now)
			default:
				stalls[group].unread(errors.New("group missing from the broker's answer"), now)
			}
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

// GroupLag returns a function answering how many records of topic group
// has still to consume (end offsets minus committed offsets, summed over
// partitions), read from the broker at most every 100 ms.
func (c *Client) GroupLag(group, topic string) (func(ctx context.Context) (int64, error), func(), error) {
	adm, closeAdm, err := c.newAdmin()
	if err != nil {
		return nil, nil, err
	}
	lag := cachedFor(100*time.Millisecond, func(ctx context.Context) (int64, error) {
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
		return sum, nil
	})
	return lag, closeAdm, nil
}

// cachedFor returns fetch, its answer kept for d; callers wait for one
// fetch at a time. Errors are not kept.
func cachedFor[T any](d time.Duration, fetch func(context.Context) (T, error)) func(context.Context) (T, error) {
	var (
		mu      sync.Mutex
		fetched time.Time
		last    T
	)
	return func(ctx context.Context) (T, error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(fetched) <= d {
			return last, nil
		}
		v, err := fetch(ctx)
		if err != nil {
			return v, err
		}
		last, fetched = v, time.Now()
		return last, nil
	}
}

// newAdmin returns an admin client on the cluster, with the process's Kafka
// security options, and its close.
func (c *Client) newAdmin() (*kadm.Client, func(), error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, c.opts...)...)
	if err != nil {
		return nil, nil, err
	}
	return kadm.NewClient(cl), cl.Close, nil
}

// WaitConsumed waits until every one of groups has committed the end
// offsets of topic (its lag is zero), polling every interval, or ctx ends;
// then it reports what is left.
func (c *Client) WaitConsumed(ctx context.Context, topic string, interval time.Duration, groups ...string) error {
	lags := make([]func(context.Context) (int64, error), len(groups))
	for i, g := range groups {
		lag, closeLag, err := c.GroupLag(g, topic)
		if err != nil {
			return err
		}
		defer closeLag()
		lags[i] = lag
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	left := make([]string, 0, len(groups))
	for {
		left = left[:0]
		for i, lag := range lags {
			n, err := lag(ctx)
			if err != nil {
				left = append(left, fmt.Sprintf("%s: %v", groups[i], err))
			} else if n > 0 {
				left = append(left, fmt.Sprintf("%s: %d records", groups[i], n))
			}
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not consumed: %s", topic, strings.Join(left, ", "))
		case <-t.C:
		}
	}
}
