package dlq_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/app/dlq"
)

const (
	dlqTopic = "events.dlq.v1"
	rawTopic = "events.raw.v1"
	waitFor  = 20 * time.Second
)

// now is the clock of every test: records are timestamped relative to it.
// It is the real time: Replay and List take ages from Options.Now, and
// the records are produced with the real clock.
var now = time.Now().UTC().Truncate(time.Second)

type cluster struct {
	addrs []string
	cl    *kgo.Client
	adm   *kadm.Client
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, dlqTopic), kfake.SeedTopics(24, rawTopic))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &cluster{addrs: c.ListenAddrs(), cl: cl, adm: kadm.NewClient(cl)}
}

func (c *cluster) opts() dlq.Options {
	return dlq.Options{Brokers: c.addrs, Topic: dlqTopic, Now: func() time.Time { return now }}
}

// poisoned is a message as Watermill's PoisonQueue middleware publishes it
// through the pipeline's watermill-kafka publisher.
type poisoned struct {
	partition int32 // in the DLQ
	handler   string
	reason    string
	id        string
	key       string
	age       time.Duration
	topic     string // original topic; default rawTopic, "-" for none
}

func (p poisoned) correlationID() string { return "corr-" + p.id }
func (p poisoned) payload() string {
	return `{"event_id":"` + p.id + `","customer_id":"` + p.key + `","timestamp":"2026-11-25T10:00:00Z","heart_rate":72}`
}

// produce writes ps to the DLQ and returns their offsets.
func (c *cluster) produce(t *testing.T, ps ...poisoned) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var offsets []int64
	for _, p := range ps {
		topic := p.topic
		if topic == "" {
			topic = rawTopic
		}
		headers := []kgo.RecordHeader{
			{Key: "_watermill_message_uuid", Value: []byte(p.id)},
			{Key: "partition_key", Value: []byte(p.key)},
			{Key: "correlation_id", Value: []byte(p.correlationID())},
			{Key: "reason_poisoned", Value: []byte(p.reason)},
		}
		if topic != "-" {
			headers = append(headers, kgo.RecordHeader{Key: "topic_poisoned", Value: []byte(topic)})
		}
		headers = append(headers,
			kgo.RecordHeader{Key: "handler_poisoned", Value: []byte(p.handler)},
			kgo.RecordHeader{Key: "subscriber_poisoned", Value: []byte("kafka.Subscriber")})
		r := &kgo.Record{Topic: dlqTopic, Partition: p.partition, Key: []byte(p.key), Value: []byte(p.payload()),
			Headers: headers, Timestamp: now.Add(-p.age)}
		require.NoError(t, c.cl.ProduceSync(ctx, r).FirstErr())
		offsets = append(offsets, r.Offset)
	}
	return offsets
}

// records reads everything in topic.
func (c *cluster) records(t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	end, err := c.adm.ListEndOffsets(ctx, topic)
	require.NoError(t, err)
	require.NoError(t, end.Error())
	want := int64(0)
	end.Each(func(o kadm.ListedOffset) { want += o.Offset })
	if want == 0 {
		return nil
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(c.addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cons.Close()
	var out []*kgo.Record
	for int64(len(out)) < want {
		fs := cons.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of %d records of %s", len(out), want, topic)
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

// committed returns the replay group's committed offsets of the DLQ.
func (c *cluster) committed(t *testing.T) map[int32]int64 {
	t.Helper()
	resp, err := c.adm.FetchOffsets(context.Background(), dlq.DefaultGroup)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return nil
	}
	require.NoError(t, err)
	out := map[int32]int64{}
	for p, o := range resp[dlqTopic] {
		out[p] = o.At
	}
	return out
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// ids returns the message ids of records.
func ids(rs []*kgo.Record) []string {
	var out []string
	for _, r := range rs {
		id, _ := header(r, "_watermill_message_uuid")
		out = append(out, id)
	}
	return out
}

// jsonLines decodes JSON-lines output; the last line of a replay is its
// summary.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "line %q", sc.Text())
		lines = append(lines, m)
	}
	return lines
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return c
}

func replay(t *testing.T, c *cluster, opts dlq.Options, f dlq.Filter) (dlq.Result, string) {
	t.Helper()
	var out bytes.Buffer
	res, err := dlq.Replay(ctx(t), opts, f, &out)
	require.NoError(t, err, out.String())
	return res, out.String()
}
