package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// broker is a phase's in-process Kafka broker with the pipeline's topics.
// Each phase gets its own, so the records of one phase (kept in memory)
// are freed before the next. The drain phase may use an external one
// instead (-drain-brokers), whose cluster is nil.
type broker struct {
	cluster *kafka.Broker
	addrs   []string
	kafka   config.KafkaConfig
}

// externalBroker is the Kafka of addrs, with topics' topics created if
// missing.
func externalBroker(ctx context.Context, addrs []string, topics config.KafkaConfig) (*broker, error) {
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := kafka.EnsureTopics(tctx, addrs, nil, -1, kafka.Topics(topics), quiet); err != nil {
		return nil, fmt.Errorf("-drain-brokers %s: %w", strings.Join(addrs, ","), err)
	}
	return &broker{addrs: addrs, kafka: topics}, nil
}

func startBroker(ctx context.Context, topics config.KafkaConfig) (*broker, error) {
	// The broker's own warnings (a consumer-group member it had to expire)
	// go to stderr; topic creation is quiet.
	c, err := kafka.StartBroker("127.0.0.1:0", "", slog.Default())
	if err != nil {
		return nil, err
	}
	b := &broker{cluster: c, addrs: c.ListenAddrs(), kafka: topics}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := kafka.EnsureTopics(tctx, b.addrs, nil, -1, kafka.Topics(topics), quiet); err != nil {
		c.Close()
		return nil, err
	}
	return b, nil
}

func (b *broker) close() {
	if b.cluster != nil {
		b.cluster.Close()
	}
}

// addr is the bootstrap list the children connect to.
func (b *broker) addr() string { return strings.Join(b.addrs, ",") }

// client returns a franz-go client of the broker. Its default partitioner
// hashes keys with murmur2, as the pipeline's publisher does, so a
// customer's readings land on the partition the simulator would use.
func (b *broker) client(opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.addrs...)}, opts...)...)
}

// uncompressed makes the bench produce as the simulator (sarama's defaults)
// does: franz-go would compress batches with snappy, which changes what
// the consumers under test do.
var uncompressed = kgo.ProducerBatchCompression(kgo.NoCompression())

// endOffsets returns the sum of topic's end offsets: how many records it
// holds (nothing is ever deleted from the bench's topics).
func (b *broker) endOffsets(ctx context.Context, topic string) (map[int32]int64, int64, error) {
	cl, err := b.client()
	if err != nil {
		return nil, 0, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, 0, err
	}
	out := map[int32]int64{}
	var sum int64
	var perr error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			perr = o.Err
		}
		out[o.Partition] = o.Offset
		sum += o.Offset
	})
	return out, sum, perr
}

// readAll calls f with every record of topic, from its start to the end
// offsets it has when readAll is called.
func (b *broker) readAll(ctx context.Context, topic string, f func(*kgo.Record)) error {
	ends, total, err := b.endOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	if total == 0 {
		return nil
	}
	cl, err := b.client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(8<<20))
	if err != nil {
		return err
	}
	defer cl.Close()
	left := map[int32]int64{}
	for p, end := range ends {
		if end > 0 {
			left[p] = end
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read back %s: %d partitions unfinished: %w", topic, len(left), err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return fmt.Errorf("read back %s: %w", topic, ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := left[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			f(r)
			if r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		})
	}
	return nil
}

// waitConsumed waits until group has committed every record of topic (the
// pipeline's own wait, kafka.Client.WaitConsumed), for at most wait.
func (b *broker) waitConsumed(ctx context.Context, cfg config.Config, group, topic string, wait time.Duration) error {
	c, err := kafka.NewClient(b.addrs, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return c.WaitConsumed(ctx, topic, 20*time.Millisecond, group)
}
