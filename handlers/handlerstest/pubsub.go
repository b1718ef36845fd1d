package handlerstest

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Read returns the first n messages sub delivers on topic (a GoChannel
// subscriber: what a router published there), acking each; it fails t if
// they have not all come within 10 s.
func Read(t testing.TB, sub message.Subscriber, topic string, n int) []*message.Message {
	t.Helper()
	ch, err := sub.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatalf("subscribe to %s: %v", topic, err)
	}
	var out []*message.Message
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case m := <-ch:
			m.Ack()
			out = append(out, m)
		case <-deadline:
			t.Fatalf("got %d of %d messages on %s", len(out), n, topic)
		}
	}
	return out
}

// Run runs r until t ends, returning once it is running; then it stops r
// and checks that it stopped cleanly, before t's earlier cleanups.
func Run(t testing.TB, r *message.Router) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-r.Running()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	})
}
