package windowed_test

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/app/kafka/windowed"
	"github.com/heartbeat/heartbeat/messages"
)

func TestNewSubscriber_Validates(t *testing.T) {
	tests := []struct {
		name string
		cfg  windowed.Config
		err  string
	}{
		{"no brokers", windowed.Config{ConsumerGroup: "g"}, "missing brokers"},
		{"no group", windowed.Config{Brokers: []string{"localhost:9092"}}, "missing consumer group"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := windowed.NewSubscriber(tt.cfg, watermill.NopLogger{})
			require.ErrorContains(t, err, tt.err)
		})
	}
}

func TestSubscriber_MessageFields(t *testing.T) {
	c := newCluster(t)
	records := []*kgo.Record{
		{Topic: topic, Partition: 2, Key: []byte("cust_1"), Value: []byte("a"), Headers: []kgo.RecordHeader{
			{Key: messages.UUIDHeader, Value: []byte("0192f7c4-0000-7000-8000-000000000001")},
			{Key: messages.CorrelationIDMetadata, Value: []byte("corr-1")},
		}},
		{Topic: topic, Partition: 2, Key: []byte("cust_2"), Value: []byte("b"), Headers: []kgo.RecordHeader{
			{Key: messages.KeyMetadata, Value: []byte("from-header")},
		}},
	}
	require.NoError(t, c.prod.ProduceSync(context.Background(), records...).FirstErr())
	_, ch := subscribe(t, c, "fields", nil)

	first, second := receive(t, ch), receive(t, ch)
	require.Equal(t, "0192f7c4-0000-7000-8000-000000000001", first.UUID)
	require.Equal(t, message.Payload("a"), first.Payload)
	require.Equal(t, "corr-1", first.Metadata.Get(messages.CorrelationIDMetadata))
	require.Equal(t, "cust_1", first.Metadata.Get(messages.KeyMetadata))
	require.NotContains(t, first.Metadata, messages.UUIDHeader)
	require.Equal(t, messages.Source{Topic: topic, Partition: 2, Offset: 0}, source(t, first))

	require.Equal(t, "topic-2-1", second.UUID, "UUID derived from the record's coordinates")
	require.Equal(t, "from-header", second.Metadata.Get(messages.KeyMetadata), "a header wins over the key")
	require.Equal(t, messages.Source{Topic: topic, Partition: 2, Offset: 1}, source(t, second))
	first.Ack()
	second.Ack()
}

// A partition's later messages arrive while its first ones are still unacked.
func TestSubscriber_ManyInFlightPerPartition(t *testing.T) {
	c := newCluster(t)
	const n = 300
	c.produce(t, n, 7)
	_, ch := subscribe(t, c, "in-flight", nil)

	held := make([]*message.Message, 0, n)
	for i := range n {
		msg := receive(t, ch)
		require.Equal(t, messages.Source{Topic: topic, Partition: 7, Offset: int64(i)}, source(t, msg), "in order")
		held = append(held, msg)
	}
	for _, msg := range held {
		msg.Ack()
	}
	c.requireCommitted(t, "in-flight", map[int32]int64{7: n})
}

// The committed offset stops at the first unacknowledged message.
func TestSubscriber_CommitsContiguousAcks(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 6, 0)
	_, ch := subscribe(t, c, "contiguous", nil)

	msgs := make([]*message.Message, 6)
	for i := range msgs {
		msgs[i] = receive(t, ch)
		require.Equal(t, int64(i), source(t, msgs[i]).Offset)
	}
	for _, i := range []int{4, 5, 0, 1, 2} {
		msgs[i].Ack()
	}
	c.requireCommitted(t, "contiguous", map[int32]int64{0: 3})

	msgs[3].Ack()
	c.requireCommitted(t, "contiguous", map[int32]int64{0: 6})
}

// Nacked messages come back; once everything is acked the group has
// committed every partition to its end.
func TestSubscriber_NackRedelivers(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 100, allPartitions()...)
	_, ch := subscribe(t, c, "nacks", nil)

	log := newAckLog()
	nacked := make(map[messages.Source]int)
	for log.count() < 100*partitions {
		msg := receive(t, ch)
		if rand.IntN(5) == 0 {
			nacked[source(t, msg)]++
			msg.Nack()
			continue
		}
		log.ack(msg)
	}
	require.NotEmpty(t, nacked)
	for src := range nacked {
		require.Positive(t, log.acked[src], "nacked %v never acked", src)
	}
	end := c.endOffsets(t)
	require.Empty(t, log.missing(end))
	c.requireCommitted(t, "nacks", end)
}

// A new subscriber in the same group continues exactly where a closed one
// committed: nothing skipped, nothing read twice.
func TestSubscriber_RestartResumes(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 100, allPartitions()...)
	const group = "restart"
	log := newAckLog()

	first, ch := subscribe(t, c, group, nil)
	next := make(map[int32]int64)
	for range 1000 {
		msg := receive(t, ch)
		src := source(t, msg)
		require.Equal(t, next[src.Partition], src.Offset)
		next[src.Partition]++
		log.ack(msg)
	}
	require.NoError(t, first.Close())
	for p := range int32(partitions) {
		if _, ok := next[p]; !ok {
			next[p] = -1 // nothing consumed: no commit
		}
	}
	require.Equal(t, next, c.committed(t, group), "close commits every acked message")

	_, ch = subscribe(t, c, group, nil)
	for log.count() < 100*partitions {
		msg := receive(t, ch)
		src := source(t, msg)
		require.Equal(t, max(next[src.Partition], 0), src.Offset, "resumes at the commit, in order")
		next[src.Partition] = src.Offset + 1
		log.ack(msg)
	}
	for src, n := range log.acked {
		require.Equal(t, 1, n, "%v delivered twice", src)
	}
	c.requireCommitted(t, group, c.endOffsets(t))
}

// consume acks what arrives on ch in small batches, so that some messages are
// always in flight, and counts them in n, until ch closes.
func consume(ch <-chan *message.Message, log *ackLog, n *atomic.Int64) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(time.Millisecond)
		defer ticker.Stop()
		var pending []*message.Message
		flush := func() {
			for _, msg := range pending {
				log.ack(msg)
			}
			n.Add(int64(len(pending)))
			pending = pending[:0]
		}
		for {
			select {
			case msg, ok := <-ch:
				if !ok {
					flush()
					return
				}
				pending = append(pending, msg)
				if len(pending) >= 64 {
					flush()
				}
			case <-ticker.C:
				flush()
			}
		}
	}()
	return done
}

// A second member joins mid-stream and later leaves; between them every
// record is acknowledged and the group commits every partition to its end.
func TestSubscriber_Rebalance(t *testing.T) {
	c := newCluster(t)
	const group = "rebalance"
	all := allPartitions()
	small := func(cfg *windowed.Config) { cfg.MaxInFlightPerPartition = 50 }
	log := newAckLog()
	var n1, n2 atomic.Int64
	c.produce(t, 200, all...)

	_, ch1 := subscribe(t, c, group, small)
	done1 := consume(ch1, log, &n1)
	require.Eventually(t, func() bool { return n1.Load() >= 1000 }, waitFor, tick)

	second, ch2 := subscribe(t, c, group, small)
	done2 := consume(ch2, log, &n2)
	// Keep the stream going until the second member has taken its share.
	require.Eventually(t, func() bool {
		c.produce(t, 5, all...)
		return n2.Load() >= 200
	}, waitFor, 20*time.Millisecond, "second member got no records")
	first2 := n1.Load()

	require.NoError(t, second.Close())
	<-done2
	c.produce(t, 200, all...)

	end := c.endOffsets(t)
	var total int
	for _, o := range end {
		total += int(o)
	}
	assert.Eventually(t, func() bool { return log.count() == total }, waitFor, tick)
	require.Empty(t, log.missing(end))
	require.Greater(t, n1.Load(), first2, "first member took the partitions back")
	c.requireCommitted(t, group, end)
	select {
	case <-done1:
		t.Fatal("first member stopped")
	default:
	}
}

// Close returns although nobody reads the channel and messages are unacked.
func TestSubscriber_CloseWithoutReader(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 50, allPartitions()...)
	sub, ch := subscribe(t, c, "no-reader", func(cfg *windowed.Config) { cfg.DrainTimeout = 100 * time.Millisecond })
	held := receive(t, ch) // delivered, never settled

	closed := make(chan error)
	go func() { closed <- sub.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("Close blocked")
	}
	for range ch { // drained and closed
	}
	require.Equal(t, int64(-1), c.committed(t, "no-reader")[source(t, held).Partition])
}

// Cancelling the Subscribe context closes the channel.
func TestSubscriber_ContextCancelCloses(t *testing.T) {
	c := newCluster(t)
	sub, err := windowed.NewSubscriber(windowed.Config{Brokers: c.addrs, ConsumerGroup: "cancel"}, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	_, err = sub.Subscribe(ctx, "other")
	require.Error(t, err, "one topic per subscriber")

	cancel()
	select {
	case _, ok := <-ch:
		require.False(t, ok)
	case <-time.After(waitFor):
		t.Fatal("channel not closed")
	}
	require.NoError(t, sub.Close())
}
