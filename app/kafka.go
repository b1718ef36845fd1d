package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/app/kgopub"
	"github.com/heartbeat/heartbeat/app/windowed"
	"github.com/heartbeat/heartbeat/messages"
)

// StartBroker starts the in-process Kafka-protocol broker (franz-go's kfake)
// listening on addr ("127.0.0.1:0" picks a free port). With dataDir set, its
// records, topics and group offsets survive a restart. Its consumer groups
// keep Kafka's session rule (see [Broker]); log gets a WARN line for each
// member the broker removes for want of heartbeats.
func StartBroker(addr, dataDir string, log *slog.Logger) (*Broker, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("BROKER_ADDR: %w", err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("BROKER_ADDR: port %q is not a number", portText)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(MaxMessageBytes)}),
		kfake.GroupMaxSessionTimeout(brokerMaxSessionTimeout),
	}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start in-process broker on %s: %w", addr, err)
	}
	k, err := startSessionKeeper(c, log)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("start in-process broker on %s: %w", addr, err)
	}
	return &Broker{Cluster: c, keeper: k}, nil
}

// MaxMessageBytes is the largest record the in-process broker accepts, as a
// default Kafka broker does (message.max.bytes).
const MaxMessageBytes = 1048588

// TopicSpec is a topic to create at start-up, with the variables that set
// it (for error messages).
type TopicSpec struct {
	Name       string
	Partitions int32
	// NameVar and PartitionsVar are the variables of the name and the
	// partition count.
	NameVar, PartitionsVar string
}

// Topics returns the four topics of the pipeline with their partition counts.
func (c KafkaConfig) Topics() []TopicSpec {
	return []TopicSpec{
		{c.TopicRaw, c.PartitionsRaw, "KAFKA_TOPIC_RAW", "KAFKA_PARTITIONS_RAW"},
		{c.TopicInvalid, c.PartitionsOther, "KAFKA_TOPIC_INVALID", "KAFKA_PARTITIONS_OTHER"},
		{c.TopicAnomaly, c.PartitionsOther, "KAFKA_TOPIC_ANOMALY", "KAFKA_PARTITIONS_OTHER"},
		{c.TopicDLQ, c.PartitionsOther, "KAFKA_TOPIC_DLQ", "KAFKA_PARTITIONS_OTHER"},
	}
}

// RefusedError is Kafka answering with an error that retrying does not
// cure (a topic it will not create, credentials it does not accept), as
// opposed to not being reachable.
type RefusedError struct {
	msg string
	err error
}

func (e *RefusedError) Error() string { return e.msg + ": " + e.err.Error() }
func (e *RefusedError) Unwrap() error { return e.err }

// EnsureTopics creates the topics that do not exist; existing topics are
// left as they are. It retries while the cluster is not reachable yet, until
// ctx ends; an error Kafka does not mark retriable is returned at once, as a
// *RefusedError naming the variables to check.
func EnsureTopics(ctx context.Context, brokers []string, opts []kgo.Opt, replication int16, topics []TopicSpec, log *slog.Logger) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return fmt.Errorf("KAFKA_BOOTSTRAP_SERVERS: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	backoff := 250 * time.Millisecond
	for _, t := range topics {
		for {
			// CreateTopics, not CreateTopic: its error is the request's
			// (the cluster, the client), the topic's is in its response.
			var topicErr error
			resps, err := adm.CreateTopics(ctx, t.Partitions, replication, nil, t.Name)
			if err == nil {
				if r, ok := resps[t.Name]; ok {
					topicErr = r.Err
				} else {
					err = fmt.Errorf("no answer for topic %s", t.Name)
				}
			}
			var ke *kerr.Error
			switch {
			case err != nil && errors.As(err, &ke) && !ke.Retriable:
				return &RefusedError{fmt.Sprintf("Kafka at %s refused the client (check KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_*)", strings.Join(brokers, ",")), err}
			case err == nil && errors.Is(topicErr, kerr.TopicAlreadyExists):
				log.Debug("topic exists", "topic", t.Name)
			case err == nil && errors.As(topicErr, &ke) && !ke.Retriable:
				return &RefusedError{fmt.Sprintf("Kafka refused to create topic %s=%s with %s=%d and KAFKA_REPLICATION_FACTOR=%d",
					t.NameVar, t.Name, t.PartitionsVar, t.Partitions, replication), topicErr}
			case err == nil && topicErr == nil:
				log.Info("topic created", "topic", t.Name, "partitions", t.Partitions)
			default:
				if err == nil {
					err = topicErr
				}
				if ctx.Err() != nil {
					return fmt.Errorf("create topic %s on %v: %w", t.Name, brokers, err)
				}
				log.Warn("cannot create topic yet, retrying", "topic", t.Name, "brokers", brokers, "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
				backoff = min(backoff*2, 5*time.Second)
				continue
			}
			break
		}
	}
	return nil
}

// keyedMarshaler writes the messages.KeyMetadata metadata as the record key,
// so one customer stays on one partition. (Consumers recover the key of
// records produced without that header: messages.Record.Message.)
type keyedMarshaler struct{ kafka.DefaultMarshaler }

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

func (a *App) saramaConfig() (*sarama.Config, error) {
	c := sarama.NewConfig()
	c.ClientID = a.Config.Kafka.ClientID
	c.Version = sarama.V2_8_0_0
	c.Metadata.Retry.Backoff = 500 * time.Millisecond
	return c, a.Config.Kafka.Security.applySarama(c)
}

// NewPublisher returns a Kafka publisher: synchronous, idempotent, waiting
// for all in-sync replicas, keyed by customer with Kafka's murmur2
// partitioner (the Java client's, so other producers agree on partitions).
func (a *App) NewPublisher() (message.Publisher, error) {
	c, err := a.saramaConfig()
	if err != nil {
		return nil, err
	}
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = 10
	c.Producer.Retry.Backoff = 250 * time.Millisecond
	c.Producer.MaxMessageBytes = MaxMessageBytes
	c.Producer.Partitioner = sarama.NewMurmur2Partitioner
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{
		Brokers:               a.Brokers,
		Marshaler:             keyedMarshaler{},
		OverwriteSaramaConfig: c,
	}, a.WLogger)
	if err != nil {
		return nil, fmt.Errorf("kafka publisher for %v: %w", a.Brokers, err)
	}
	return pub, nil
}

// NewBulkPublisher returns the publisher of the producers that publish at
// volume (the simulator): franz-go (package kgopub), idempotent, waiting for
// all in-sync replicas, murmur2-keyed like NewPublisher's, and batching
// many messages per produce request.
func (a *App) NewBulkPublisher() (message.Publisher, error) {
	return kgopub.New(a.Brokers, append([]kgo.Opt{kgo.ClientID(a.Config.Kafka.ClientID),
		kgo.ProducerBatchMaxBytes(MaxMessageBytes)}, a.KafkaOpts...)...)
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
// committed only over contiguously acknowledged records.
func (a *App) NewWindowedSubscriber(group string) (message.Subscriber, error) {
	return a.newWindowed(group, windowed.Config{
		BatchRecords:                    persistBatchRecords,
		MaxMessagesInFlightPerPartition: persistBatchesInFlight,
		MaxInFlightPerPartition:         a.Config.Persist.MaxInFlightPerPartition,
	})
}

// NewOrderedSubscriber returns detect's subscriber: a partition's records in
// batch messages delivered one at a time, the next only after the one
// before it was acked, as watermill-kafka delivers single messages — the
// detector's per-customer state needs partition order — and partitions in
// parallel.
func (a *App) NewOrderedSubscriber(group string) (message.Subscriber, error) {
	return a.newWindowed(group, windowed.Config{
		BatchRecords:            detectBatchRecords,
		Ordered:                 true,
		MaxInFlightPerPartition: detectMaxInFlight,
	})
}

func (a *App) newWindowed(group string, cfg windowed.Config) (message.Subscriber, error) {
	// A 10 s session (franz-go defaults to 45 s, sarama to 10 s): a killed
	// member's partitions move to the survivors within seconds.
	opts := append([]kgo.Opt{kgo.ClientID(a.Config.Kafka.ClientID),
		kgo.SessionTimeout(10 * time.Second), kgo.HeartbeatInterval(time.Second),
		// A fetch can overshoot a partition's window by what it returns:
		// keep that small.
		kgo.FetchMaxPartitionBytes(128 << 10)}, a.KafkaOpts...)
	if id := a.Config.Kafka.GroupInstanceID; id != "" {
		// A static member: it does not leave the group when it stops, so a
		// restart with the same id gets its partitions back at once.
		opts = append(opts, kgo.InstanceID(id))
		a.Log.Info("joining consumer group as a static member", "group", group, "instance_id", id)
	}
	cfg.Brokers, cfg.ConsumerGroup, cfg.ClientOpts = a.Brokers, group, opts
	cfg.NackResendSleep, cfg.DrainTimeout = time.Second, a.Config.ShutdownTimeout
	sub, err := windowed.NewSubscriber(cfg, a.WLogger)
	if err != nil {
		return nil, fmt.Errorf("windowed subscriber for group %s: %w", group, err)
	}
	return sub, nil
}
