package simulate_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/simulate"
)

// recorder is a message.Publisher that keeps what it is given.
type recorder struct {
	mu    sync.Mutex
	msgs  []*message.Message
	calls int
}

func (r *recorder) Publish(_ string, msgs ...*message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, msgs...)
	r.calls++
	return nil
}

func (r *recorder) Close() error { return nil }

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func TestSimulatorPublishesEveryEventKeyedAndInCustomerOrder(t *testing.T) {
	pub := &recorder{}
	var published atomic.Int64
	sim := &simulate.Simulator{
		Generator: simulate.NewGenerator(simulate.GeneratorConfig{Customers: 20, Seed: 7}),
		Publisher: pub, Topic: "raw", Rate: 1e6, Total: 5000, Publishers: 4,
		OnPublished: func(simulate.Event) { published.Add(1) },
	}
	require.NoError(t, sim.Run(context.Background()))
	require.Equal(t, 5000, pub.count())
	require.Equal(t, int64(5000), published.Load())

	want := simulate.NewGenerator(simulate.GeneratorConfig{Customers: 20, Seed: 7})
	next := map[string][]string{} // customer -> ids in generation order
	at := time.Now()
	for range 5000 {
		ev := want.Next(at)
		next[ev.Key] = append(next[ev.Key], ev.ID)
	}
	for _, m := range pub.msgs {
		key := m.Metadata.Get(messages.KeyMetadata)
		require.NotEmpty(t, key)
		require.NotEmpty(t, wmmw.MessageCorrelationID(m))
		require.Equal(t, next[key][0], m.UUID, "customer %s's events out of order", key)
		next[key] = next[key][1:]
	}
}

func TestSimulatorThrottleHoldsTheStreamBack(t *testing.T) {
	pub := &recorder{}
	release := make(chan struct{})
	var held atomic.Int64
	sim := &simulate.Simulator{
		Generator: simulate.NewGenerator(simulate.GeneratorConfig{Customers: 5, Seed: 1}),
		Publisher: pub, Topic: "raw", Rate: 1e5, Total: 1000, Publishers: 2,
		Throttle: func(ctx context.Context) error {
			held.Add(1)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	}
	done := make(chan error, 1)
	go func() { done <- sim.Run(context.Background()) }()
	require.Eventually(t, func() bool { return held.Load() > 0 }, 5*time.Second, time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("simulator finished while held back: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	require.Zero(t, pub.count(), "published while held back")
	close(release)
	require.NoError(t, <-done)
	require.Equal(t, 1000, pub.count())
}
