package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka/kgopub"
	"github.com/heartbeat/heartbeat/app/kafka/windowed"
	"github.com/heartbeat/heartbeat/messages"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Client opens the pipeline's clients of one Kafka cluster — publishers,
// subscribers, admin — with the process's settings (KAFKA_*): client id,
// TLS and SASL, static membership.
type Client struct {
	// Brokers is the bootstrap list in use: KAFKA_BOOTSTRAP_SERVERS, or the
	// in-process broker's address.
	Brokers []string
	cfg     config.Config
	opts    []kgo.Opt // franz-go's TLS and SASL options
	log     *slog.Logger
	wlog    watermill.LoggerAdapter
}

// NewClient returns a Client for brokers with cfg's Kafka settings.
func NewClient(brokers []string, cfg config.Config, log *slog.Logger, wlog watermill.LoggerAdapter) (*Client, error) {
	opts, err := FranzOpts(cfg.Kafka.Security)
	if err != nil {
		return nil, err
	}
	return &Client{Brokers: brokers, cfg: cfg, opts: opts, log: log, wlog: wlog}, nil
}

// With returns a copy of c whose franz-go clients also get opts (a test's
// dialer, say).
func (c *Client) With(opts ...kgo.Opt) *Client {
	d := *c
	d.opts = append(append([]kgo.Opt(nil), c.opts...), opts...)
	return &d
}

// Opts are the franz-go options every client of the cluster needs (TLS,
// SASL), for clients opened elsewhere.
func (c *Client) Opts() []kgo.Opt { return c.opts }

// keyedMarshaler writes the messages.KeyMetadata metadata as the record key,
// so one customer stays on one partition. (Consumers recover the key of
// records produced without that header: messages.Record.Message.)
type keyedMarshaler struct{ wmkafka.DefaultMarshaler }

func (m keyedMarshaler) Marshal(topic string, msg *message.Message) (*sarama.ProducerMessage, error) {
	pm, err := m.DefaultMarshaler.Marshal(topic, msg)
	if err != nil {
		return nil, err
	}
	if key := msg.Metadata.Get(messages.KeyMetadata); key != "" {
		pm.Key = sarama.StringEncoder(key)
	}
	return pm, nil
}

func (c *Client) saramaConfig() (*sarama.Config, error) {
	sc := sarama.NewConfig()
	sc.ClientID = c.cfg.Kafka.ClientID
	sc.Version = sarama.V2_8_0_0
	sc.Metadata.Retry.Backoff = 500 * time.Millisecond
	return sc, applySarama(c.cfg.Kafka.Security, sc)
}

// NewPublisher returns a Kafka publisher: synchronous, idempotent, waiting
// for all in-sync replicas, keyed by customer with Kafka's murmur2
// partitioner (the Java client's, so other producers agree on partitions).
func (c *Client) NewPublisher() (message.Publisher, error) {
	sc, err := c.saramaConfig()
	if err != nil {
		return nil, err
	}
	sc.Producer.Return.Successes = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Retry.Max = 10
	sc.Producer.Retry.Backoff = 250 * time.Millisecond
	sc.Producer.MaxMessageBytes = MaxMessageBytes
	sc.Producer.Partitioner = sarama.NewMurmur2Partitioner
	pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{
		Brokers:               c.Brokers,
		Marshaler:             keyedMarshaler{},
		OverwriteSaramaConfig: sc,
	}, c.wlog)
	if err != nil {
		return nil, fmt.Errorf("kafka publisher for %v: %w", c.Brokers, err)
	}
	return pub, nil
}

// NewBulkPublisher returns the publisher of the producers that publish at
// volume (the simulator): franz-go (package kgopub), idempotent, waiting for
// all in-sync replicas, murmur2-keyed like NewPublisher's, and batching
// many messages per produce request.
func (c *Client) NewBulkPublisher() (message.Publisher, error) {
	return kgopub.New(c.Brokers, append([]kgo.Opt{kgo.ClientID(c.cfg.Kafka.ClientID),
		kgo.ProducerBatchMaxBytes(MaxMessageBytes)}, c.opts...)...)
}

// Records in one batch message of the windowed subscribers (package
// windowed): the handlers take a partition's records a batch at a time, so
// the router's per-message work — a goroutine, the middleware chain, an ack
// — is paid once per batch instead of once per record.
const (
	persistBatchRecords = 500
	// persistBatchesInFlight bounds persist's unsettled batch messages per
	// partition (handler goroutines waiting for their commit): records
	// arriving meanwhile gather into the next batch.
	persistBatchesInFlight = 8
	detectBatchRecords     = 500
	// detectMaxInFlight bounds the records of a partition detect holds,
	// fetched or delivered and not yet acknowledged.
	detectMaxInFlight = 1000
)

// NewWindowedSubscriber returns the high-throughput subscriber of the persist
// path (package windowed): a partition's records in batch messages, many in
// flight per partition so that persist's COPY batches fill, and offsets
// committed only over contiguously acknowledged records, every
// PERSIST_COMMIT_INTERVAL.
func (c *Client) NewWindowedSubscriber(group string) (message.Subscriber, error) {
	return c.newWindowed(group, windowed.Config{
		BatchRecords:                    persistBatchRecords,
		MaxMessagesInFlightPerPartition: persistBatchesInFlight,
		MaxInFlightPerPartition:         c.cfg.Persist.MaxInFlightPerPartition,
		CommitInterval:                  c.cfg.Persist.CommitInterval,
	})
}

// NewOrderedSubscriber returns detect's subscriber: a partition's records in
// batch messages delivered one at a time, the next only after the one
// before it was acked, as watermill-kafka delivers single messages — the
// detector's per-customer state needs partition order — and partitions in
// parallel. Offsets are committed every DETECT_COMMIT_INTERVAL, each time
// after beforeCommit (nil: none) succeeded — detect writes the history of
// the readings it evaluated there.
func (c *Client) NewOrderedSubscriber(group string, beforeCommit func(context.Context) error) (message.Subscriber, error) {
	return c.newWindowed(group, windowed.Config{
		BatchRecords:            detectBatchRecords,
		Ordered:                 true,
		MaxInFlightPerPartition: detectMaxInFlight,
		CommitInterval:          c.cfg.Anomaly.CommitInterval,
		BeforeCommit:            beforeCommit,
	})
}

func (c *Client) newWindowed(group string, cfg windowed.Config) (message.Subscriber, error) {
	// A 10 s session (franz-go defaults to 45 s, sarama to 10 s): a killed
	// member's partitions move to the survivors within seconds.
	opts := append([]kgo.Opt{kgo.ClientID(c.cfg.Kafka.ClientID),
		kgo.SessionTimeout(10 * time.Second), kgo.HeartbeatInterval(time.Second),
		// A fetch can overshoot a partition's window by what it returns:
		// keep that small.
		kgo.FetchMaxPartitionBytes(128 << 10)}, c.opts...)
	if id := c.cfg.Kafka.GroupInstanceID; id != "" {
		// A static member: it does not leave the group when it stops, so a
		// restart with the same id gets its partitions back at once.
		opts = append(opts, kgo.InstanceID(id))
		c.log.Info("joining consumer group as a static member", "group", group, "instance_id", id)
	}
	cfg.Brokers, cfg.ConsumerGroup, cfg.ClientOpts = c.Brokers, group, opts
	cfg.NackResendSleep, cfg.DrainTimeout = time.Second, c.cfg.ShutdownTimeout
	sub, err := windowed.NewSubscriber(cfg, c.wlog)
	if err != nil {
		return nil, fmt.Errorf("windowed subscriber for group %s: %w", group, err)
	}
	return sub, nil
}
