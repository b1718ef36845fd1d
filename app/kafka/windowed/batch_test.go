package windowed_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/kafka/windowed"
	"github.com/heartbeat/heartbeat/messages"
)

func batchOf(t testing.TB, msg *message.Message) *messages.Batch {
	t.Helper()
	b, ok := messages.BatchOf(msg)
	require.True(t, ok, "message %s is not a batch", msg.UUID)
	return b
}

func TestSubscriber_BatchMessages(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 25, 3)
	_, ch := subscribe(t, c, "batch", func(cfg *windowed.Config) { cfg.BatchRecords = 10 })

	var got []int
	for len(got) < 25 {
		msg := receive(t, ch)
		assert.Empty(t, msg.Payload, "a batch message has no payload of its own")
		b := batchOf(t, msg)
		require.LessOrEqual(t, len(b.Records), 10)
		assert.Equal(t, located(b.Records[0].Source), source(t, msg), "a batch's source is its first record's")
		for i, r := range b.Records {
			require.Equal(t, messages.Source{Topic: topic, Partition: 3, Offset: int64(len(got))}, located(r.Source), "record %d of %s", i, msg.UUID)
			require.Equal(t, strconv.Itoa(len(got)), string(r.Value))
			require.Equal(t, "cust_3", string(r.Key))
			one := r.Message(msg.Context())
			_, isBatch := messages.BatchOf(one)
			require.False(t, isBatch, "a record's own message is not a batch")
			require.Equal(t, "cust_3", one.Metadata.Get(messages.KeyMetadata))
			require.Equal(t, located(r.Source), source(t, one))
			got = append(got, len(got))
		}
		msg.Ack()
	}
	c.requireCommitted(t, "batch", map[int32]int64{3: 25})
}

// A nacked batch comes back as one message per record it had not done, in
// order; the records it had done count as acknowledged.
func TestSubscriber_NackedBatchSplits(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run("ordered="+strconv.FormatBool(ordered), func(t *testing.T) {
			c := newCluster(t)
			c.produce(t, 8, 5)
			group := "split-" + strconv.FormatBool(ordered)
			_, ch := subscribe(t, c, group, func(cfg *windowed.Config) {
				cfg.BatchRecords, cfg.Ordered = 8, ordered
			})

			// Take the whole partition as batches; fail the first batch
			// after it finished three records.
			var first *message.Message
			var rest []*message.Message
			for n := 0; n < 8; {
				msg := receive(t, ch)
				b := batchOf(t, msg)
				n += len(b.Records)
				if first == nil {
					first = msg
					continue
				}
				rest = append(rest, msg)
			}
			fb := batchOf(t, first)
			require.Greater(t, len(fb.Records), 3, "the first batch holds more than three records")
			fb.Done = 3
			first.Nack()

			// Unordered, later batches flow meanwhile; ordered, there are none
			// until the split records are acked.
			if ordered {
				require.Empty(t, rest, "ordered: one batch of a partition at a time")
			}
			for _, m := range rest {
				m.Ack()
			}
			for want := int64(3); want < int64(len(fb.Records)); want++ {
				msg := receive(t, ch)
				_, isBatch := messages.BatchOf(msg)
				require.False(t, isBatch, "split records come one message each")
				require.Equal(t, want, source(t, msg).Offset)
				require.Equal(t, strconv.Itoa(int(want)), string(msg.Payload))
				msg.Ack()
			}
			c.requireCommitted(t, group, map[int32]int64{5: 8})
		})
	}
}

// Ordered delivery holds a partition's next message until the one before it
// is acked, redelivers a nacked one first, and keeps partitions apart.
func TestSubscriber_OrderedDelivery(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 3, 1, 2)
	_, ch := subscribe(t, c, "ordered", func(cfg *windowed.Config) { cfg.Ordered = true })

	// One message from each partition, and nothing more, while unacked.
	heads := map[int32]*message.Message{}
	for len(heads) < 2 {
		msg := receive(t, ch)
		src := source(t, msg)
		require.Nil(t, heads[src.Partition], "a second message of partition %d before the first was acked", src.Partition)
		require.Equal(t, int64(0), src.Offset)
		heads[src.Partition] = msg
	}
	select {
	case msg := <-ch:
		require.FailNow(t, "delivered "+msg.UUID+" while each partition's first is unacked")
	case <-time.After(200 * time.Millisecond):
	}

	// Partition 1: nack offset 0, get it again, then 1 and 2. Partition 2:
	// ack in turn.
	heads[1].Nack()
	heads[2].Ack()
	seen := map[int32][]int64{}
	for len(seen[1]) < 3 || len(seen[2]) < 2 {
		msg := receive(t, ch)
		src := source(t, msg)
		seen[src.Partition] = append(seen[src.Partition], src.Offset)
		msg.Ack()
	}
	assert.Equal(t, []int64{0, 1, 2}, seen[1])
	assert.Equal(t, []int64{1, 2}, seen[2])
	c.requireCommitted(t, "ordered", map[int32]int64{1: 3, 2: 3})
}

// With a bound on unsettled messages, records that arrive meanwhile wait and
// gather into the next batch instead of becoming more messages.
func TestSubscriber_BatchesGatherWhileMessagesAreOut(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 1, 7)
	_, ch := subscribe(t, c, "gather", func(cfg *windowed.Config) {
		cfg.BatchRecords, cfg.MaxMessagesInFlightPerPartition = 50, 1
	})
	first := receive(t, ch)
	require.Len(t, batchOf(t, first).Records, 1)

	c.produce(t, 30, 7)
	select {
	case msg := <-ch:
		require.FailNow(t, "delivered "+msg.UUID+" while the partition's one message is out")
	case <-time.After(300 * time.Millisecond):
	}
	first.Ack()
	next := receive(t, ch)
	records := batchOf(t, next).Records
	require.Len(t, records, 30, "the records fetched while the first message was out come as one batch")
	for i, r := range records {
		require.Equal(t, int64(1+i), r.Source.Offset)
	}
	next.Ack()
	c.requireCommitted(t, "gather", map[int32]int64{7: 31})
}
