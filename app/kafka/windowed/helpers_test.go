package windowed_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/app/kafka/windowed"
	"github.com/heartbeat/heartbeat/messages"
)

const (
	topic      = "topic"
	partitions = 24
	waitFor    = 15 * time.Second
	tick       = 5 * time.Millisecond
)

// cluster is an in-process Kafka cluster with a 24-partition topic.
type cluster struct {
	addrs []string
	adm   *kadm.Client
	prod  *kgo.Client
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	require.NoError(t, err)
	t.Cleanup(c.Close)

	addrs := c.ListenAddrs()
	admClient, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	require.NoError(t, err)
	t.Cleanup(admClient.Close)
	prod, err := kgo.NewClient(
		kgo.SeedBrokers(addrs...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(time.Millisecond),
	)
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	return &cluster{addrs: addrs, adm: kadm.NewClient(admClient), prod: prod}
}

// produce writes n records to each of parts, keyed and numbered per
// partition.
func (c *cluster) produce(t testing.TB, n int, parts ...int32) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		perr error
	)
	for _, p := range parts {
		for i := range n {
			wg.Add(1)
			r := &kgo.Record{
				Topic:     topic,
				Partition: p,
				Key:       []byte("cust_" + strconv.Itoa(int(p))),
				Value:     []byte(strconv.Itoa(i)),
			}
			c.prod.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
				defer wg.Done()
				if err != nil {
					mu.Lock()
					perr = err
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	require.NoError(t, perr)
}

func allPartitions() []int32 {
	ps := make([]int32, partitions)
	for i := range ps {
		ps[i] = int32(i)
	}
	return ps
}

// committed returns the group's committed offset per partition; -1 when none.
func (c *cluster) committed(t testing.TB, group string) map[int32]int64 {
	t.Helper()
	resp, err := c.adm.FetchOffsets(context.Background(), group)
	require.NoError(t, err)
	out := make(map[int32]int64, partitions)
	for p := range int32(partitions) {
		out[p] = -1
		if o, ok := resp.Lookup(topic, p); ok && o.Err == nil {
			out[p] = o.At
		}
	}
	return out
}

func (c *cluster) endOffsets(t testing.TB) map[int32]int64 {
	t.Helper()
	listed, err := c.adm.ListEndOffsets(context.Background(), topic)
	require.NoError(t, err)
	out := make(map[int32]int64, partitions)
	for p := range int32(partitions) {
		o, ok := listed.Lookup(topic, p)
		require.True(t, ok)
		out[p] = o.Offset
	}
	return out
}

// requireCommitted waits until the group's committed offsets match want for
// the partitions want names.
func (c *cluster) requireCommitted(t testing.TB, group string, want map[int32]int64) {
	t.Helper()
	var got map[int32]int64
	require.Eventually(t, func() bool {
		got = c.committed(t, group)
		for p, o := range want {
			if got[p] != o {
				return false
			}
		}
		return true
	}, waitFor, tick, "committed offsets never matched")
}

// subscribe starts a subscriber with test timings and closes it at cleanup.
func subscribe(t testing.TB, c *cluster, group string, mod func(*windowed.Config)) (*windowed.Subscriber, <-chan *message.Message) {
	t.Helper()
	cfg := windowed.Config{
		Brokers:         c.addrs,
		ConsumerGroup:   group,
		CommitInterval:  10 * time.Millisecond,
		NackResendSleep: time.Millisecond,
		DrainTimeout:    5 * time.Second,
		ClientOpts: []kgo.Opt{
			kgo.HeartbeatInterval(100 * time.Millisecond),
			kgo.FetchMaxWait(50 * time.Millisecond),
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	sub, err := windowed.NewSubscriber(cfg, testLogger())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	ch, err := sub.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	return sub, ch
}

// receive returns the next message or fails the test after waitFor.
func receive(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		require.True(t, ok, "channel closed")
		return msg
	case <-time.After(waitFor):
		require.FailNow(t, "no message within "+waitFor.String())
		return nil
	}
}

// source is where msg's record is (its Source without the assignment,
// which it checks is set).
func source(t testing.TB, msg *message.Message) messages.Source {
	t.Helper()
	src, ok := messages.SourceFromContext(msg.Context())
	require.True(t, ok, "message without source")
	require.NotZero(t, src.Assignment, "message without assignment")
	return located(src)
}

// located is src without the assignment that delivered it: the record's
// place, the same whichever delivery brought it.
func located(src messages.Source) messages.Source {
	src.Assignment = 0
	return src
}

// ackLog records which records were acknowledged, by any consumer.
type ackLog struct {
	mu    sync.Mutex
	acked map[messages.Source]int
}

func newAckLog() *ackLog { return &ackLog{acked: make(map[messages.Source]int)} }

// ack acks msg and records it. It may run outside the test goroutine: a
// message without a source is recorded as the zero Source, which the test's
// coverage check then reports.
func (l *ackLog) ack(msg *message.Message) {
	src, _ := messages.SourceFromContext(msg.Context())
	msg.Ack()
	l.mu.Lock()
	l.acked[located(src)]++
	l.mu.Unlock()
}

func (l *ackLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// missing lists records below end that were never acknowledged.
func (l *ackLog) missing(end map[int32]int64) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for p, e := range end {
		for o := range e {
			if l.acked[messages.Source{Topic: topic, Partition: p, Offset: o}] == 0 {
				out = append(out, fmt.Sprintf("%d/%d", p, o))
			}
		}
	}
	return out
}

func testLogger() watermill.LoggerAdapter {
	if os.Getenv("WINDOWED_DEBUG") != "" {
		return watermill.NewStdLogger(true, false)
	}
	return watermill.NopLogger{}
}
