// Package kgopub is a Watermill [message.Publisher] on franz-go, for the
// producers that publish at volume (the simulator, replays): one Publish
// call with many messages is one batched, idempotent produce, and
// concurrent calls share produce requests instead of each waiting for its
// own round trip.
//
// Records are written as watermill-kafka's marshaler writes them — the
// message UUID in the _watermill_message_uuid header, every metadata entry
// a header — with messages.KeyMetadata as the record key, partitioned by
// Kafka's murmur2 hash of the key, as the Java client and the pipeline's
// watermill-kafka publisher do, so every producer agrees on a customer's
// partition.
package kgopub

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/messages"
)

// Publisher publishes Watermill messages with a franz-go client.
type Publisher struct {
	client *kgo.Client
	closed atomic.Bool
}

// New connects to brokers; opts are added to the publisher's own (TLS,
// SASL, client id, limits).
func New(brokers []string, opts ...kgo.Opt) (*Publisher, error) {
	client, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// murmur2 of the key, like the Java client and sarama's
		// NewMurmur2Partitioner.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka producer for %v: %w", brokers, err)
	}
	return &Publisher{client: client}, nil
}

// Publish writes msgs to topic, in order, and returns once all are
// acknowledged, or with the first error.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closed.Load() {
		return errors.New("publisher closed")
	}
	if len(msgs) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, len(msgs))
	ctx := context.Background()
	for i, m := range msgs {
		recs[i] = Record(topic, m)
		if i == 0 && m.Context() != nil {
			ctx = m.Context()
		}
	}
	if err := p.client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce %d messages to %s: %w", len(msgs), topic, err)
	}
	return nil
}

// Record is the Kafka record of msg on topic.
func Record(topic string, msg *message.Message) *kgo.Record {
	r := &kgo.Record{Topic: topic, Value: msg.Payload}
	r.Headers = make([]kgo.RecordHeader, 0, len(msg.Metadata)+1)
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: messages.UUIDHeader, Value: []byte(msg.UUID)})
	for k, v := range msg.Metadata {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	if key := msg.Metadata.Get(messages.KeyMetadata); key != "" {
		r.Key = []byte(key)
	}
	return r
}

// Close flushes what is buffered and closes the client.
func (p *Publisher) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.client.Close()
	return nil
}
