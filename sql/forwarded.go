package sql

import (
	"log/slog"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// forwardedOnce is the publisher the outbox forwarder publishes through: it
// does not publish again a message (by id) that it has already published.
//
// watermill-sql's subscriber selects a batch of the outbox in a transaction,
// hands the messages to the forwarder one by one, and records how far it got
// when the transaction commits. When that record fails — PostgreSQL went
// away between the publish and the commit — the subscriber logs the failed
// commit and selects the same batch again on its next poll: every message of
// it would reach Kafka a second time. Published is published (the producer
// reports success only once the brokers have the record), so the copy is
// skipped here. Watermill's Deduplicator does not fit: it marks an id when
// it first sees it, before the publish succeeds, so the retry of a failed
// publish would be dropped and the message lost. The set is bounded (the most recent ids), which covers a
// batch selected again by the same process; a process killed in that window
// still publishes the batch again on its next start (the forwarder is
// at-least-once; the copy carries the same message id).
type forwardedOnce struct {
	pub message.Publisher
	log *slog.Logger

	mu   sync.Mutex
	seen map[string]struct{}
	ring []string // the ids in seen, oldest at next
	next int
}

// forwardedRemembered is how many recent message ids forwardedOnce keeps:
// far above a subscriber batch (watermill-sql selects 100 by default).
const forwardedRemembered = 8192

func newForwardedOnce(pub message.Publisher, log *slog.Logger) *forwardedOnce {
	return &forwardedOnce{pub: pub, log: log, seen: make(map[string]struct{}, forwardedRemembered), ring: make([]string, forwardedRemembered)}
}

func (f *forwardedOnce) Publish(topic string, msgs ...*message.Message) error {
	fresh := msgs[:0:0]
	f.mu.Lock()
	for _, m := range msgs {
		if _, done := f.seen[m.UUID]; !done {
			fresh = append(fresh, m)
		}
	}
	f.mu.Unlock()
	if skipped := len(msgs) - len(fresh); skipped > 0 && f.log != nil {
		f.log.Info("outbox messages selected again after their progress could not be recorded; not published twice",
			"topic", topic, "skipped", skipped)
	}
	if len(fresh) == 0 {
		return nil
	}
	if err := f.pub.Publish(topic, fresh...); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range fresh {
		if _, done := f.seen[m.UUID]; done {
			continue
		}
		if old := f.ring[f.next]; old != "" {
			delete(f.seen, old)
		}
		f.ring[f.next] = m.UUID
		f.seen[m.UUID] = struct{}{}
		f.next = (f.next + 1) % len(f.ring)
	}
	return nil
}

func (f *forwardedOnce) Close() error { return f.pub.Close() }
