package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

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
func Topics(c config.KafkaConfig) []TopicSpec {
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
