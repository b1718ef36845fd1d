package dlq

import (
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults of Options.
const (
	DefaultTopic       = "events.dlq.v1"
	DefaultGroup       = "heartbeat.dlq-replay"
	DefaultIdleTimeout = 30 * time.Second
)

// maxRecordBytes is a default broker's message.max.bytes: a poisoned message
// as large as the broker accepts must be replayable.
const maxRecordBytes = 1048588

// Options locate the poison queue and say how to print it.
type Options struct {
	Brokers []string
	// Topic is the poison queue (default DefaultTopic).
	Topic string
	// Group is the consumer group in which Replay remembers how far it got
	// (default DefaultGroup).
	Group string
	// ClientOpts are added to the franz-go clients' options (TLS, SASL, ...).
	ClientOpts []kgo.Opt
	// JSON prints one JSON object per line instead of a table.
	JSON bool
	// DryRun makes Replay print what it would replay, publishing and
	// committing nothing.
	DryRun bool
	// FromStart makes Replay read from the start of the topic instead of
	// the group's committed offsets.
	FromStart bool
	// IdleTimeout bounds how long reading may go without a record while
	// some partition has not reached its end offset (default
	// DefaultIdleTimeout).
	IdleTimeout time.Duration
	// Now is the clock ages are measured with (default time.Now).
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if len(o.Brokers) == 0 {
		return o, errors.New("no Kafka brokers: set KAFKA_BOOTSTRAP_SERVERS")
	}
	if o.Topic == "" {
		o.Topic = DefaultTopic
	}
	if o.Group == "" {
		o.Group = DefaultGroup
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// newClient returns the client that lists offsets, commits and produces:
// idempotent, acknowledged by all in-sync replicas, partitioning keys with
// Kafka's murmur2 like the pipeline's publisher, so a replayed message lands
// on its customer's partition.
func newClient(o Options, extra ...kgo.Opt) (*kgo.Client, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.ClientID("heartbeat-dlq"),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchMaxBytes(maxRecordBytes),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	}
	opts = append(opts, extra...)
	opts = append(opts, o.ClientOpts...)
	return kgo.NewClient(opts...)
}
