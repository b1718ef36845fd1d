package windowed

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures a [Subscriber].
type Config struct {
	// Brokers are the seed brokers.
	Brokers []string
	// ConsumerGroup is the group whose committed offsets the subscriber
	// reads and advances.
	ConsumerGroup string
	// ClientOpts are appended to the subscriber's own client options:
	// TLS, SASL, client id, fetch sizes. Options that conflict with the
	// subscriber's group handling (auto commit, rebalance callbacks) break
	// its guarantees.
	ClientOpts []kgo.Opt

	// MaxInFlightPerPartition bounds a partition's window: the records
	// from the oldest unacknowledged one to the newest delivered one.
	// Fetching from the partition pauses when the window reaches it and
	// resumes when acks shrink the window below it; records already fetched
	// are still delivered, so the window can overshoot by one fetch.
	// Default 5000.
	MaxInFlightPerPartition int
	// BatchRecords, above 1, delivers up to that many consecutive records
	// of a partition as one batch message: a [messages.Batch] in its
	// context, an empty payload. Acking it acknowledges every record; when
	// it is nacked, its records not [messages.Batch.Done] are delivered
	// again one message each, so that a handler's per-message retries and
	// poison queue see the record that fails alone. 0 or 1: one message per
	// record.
	BatchRecords int
	// MaxMessagesInFlightPerPartition bounds a partition's delivered and
	// unsettled messages; while that many are out, its records wait and
	// the next batch message takes those that gathered. Default: no bound
	// but MaxInFlightPerPartition's. Ordered delivery keeps one.
	MaxMessagesInFlightPerPartition int
	// Ordered delivers each partition's messages one at a time, the next
	// only once the one before it was acked (a nacked one is delivered again
	// first), as watermill-kafka does: for handlers that keep state in
	// partition order. Partitions still proceed in parallel.
	Ordered bool
	// MaxPollRecords bounds the records taken from the client in one poll.
	// Default 10000.
	MaxPollRecords int
	// CommitInterval is how often acknowledged offsets are committed to the
	// group. Default 200ms: one request per member five times a second,
	// and what a crash redelivers and what a stopping process waits for
	// before its group's lag shows what it consumed (draining an in-process
	// broker) are each at most that much behind.
	CommitInterval time.Duration
	// BeforeCommit, when set, runs before each commit (periodic, or of
	// revoked partitions), after the offsets to commit were taken, and
	// the commit waits for it: what the consumer must make durable for
	// the records it acknowledged before their offsets are committed, it
	// does there. When it fails, nothing is committed that time. It runs
	// each CommitInterval even when no offset moved (to retry what failed).
	BeforeCommit func(ctx context.Context) error
	// NackResendSleep is how long a nacked message waits before it is
	// delivered again. Default 100ms, as watermill-kafka.
	NackResendSleep time.Duration
	// DrainTimeout bounds how long a revoke or Close waits for the handlers
	// to settle messages already delivered. Default 10s.
	DrainTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.MaxInFlightPerPartition <= 0 {
		c.MaxInFlightPerPartition = 5000
	}
	c.BatchRecords = max(c.BatchRecords, 1)
	if c.MaxMessagesInFlightPerPartition <= 0 {
		c.MaxMessagesInFlightPerPartition = c.MaxInFlightPerPartition
	}
	if c.MaxPollRecords <= 0 {
		c.MaxPollRecords = 10000
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = 200 * time.Millisecond
	}
	if c.NackResendSleep <= 0 {
		c.NackResendSleep = 100 * time.Millisecond
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
}

// Validate reports the first missing required field.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("missing brokers")
	}
	if c.ConsumerGroup == "" {
		return errors.New("missing consumer group")
	}
	return nil
}
