package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

const empatica = "../../testdata/empatica-e4-hr.csv"

// TestNoBrokerHints: dlq and replay with no broker at their address fail
// at once, in one line that says where they looked and how to point them
// at a broker.
func TestNoBrokerHints(t *testing.T) {
	t.Setenv("LOG_LEVEL", "error")
	for _, args := range [][]string{{"dlq", "list"}, {"dlq", "replay", "-dry-run"}, {"replay", empatica}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			addr := closedPort(t)
			t.Setenv("KAFKA_BOOTSTRAP_SERVERS", "")
			t.Setenv("BROKER_ADDR", addr)
			code, stdout, stderr := heartbeat(t, args...)
			require.Equal(t, 1, code)
			require.Empty(t, stdout)
			requireOneLine(t, stderr, "no Kafka broker at BROKER_ADDR="+addr, "KAFKA_BOOTSTRAP_SERVERS is empty",
				"connection refused", "start one with `heartbeat broker`", "KAFKA_BOOTSTRAP_SERVERS="+addr,
				"the in-process broker that a plain `heartbeat` logs at start-up")

			t.Setenv("KAFKA_BOOTSTRAP_SERVERS", addr)
			code, _, stderr = heartbeat(t, args...)
			require.Equal(t, 1, code)
			requireOneLine(t, stderr, "no Kafka broker at KAFKA_BOOTSTRAP_SERVERS="+addr, "check the address")
		})
	}
}

// poison writes a message to the poison queue as Watermill's PoisonQueue
// middleware does: the original's key, payload and metadata, and why.
func poison(t *testing.T, cl *kgo.Client, id, handler, reason string) {
	t.Helper()
	r := &kgo.Record{Topic: "events.dlq.v1", Key: []byte("c1"), Value: []byte(`{"event_id":"` + id + `"}`),
		Headers: []kgo.RecordHeader{
			{Key: "_watermill_message_uuid", Value: []byte(id)},
			{Key: "correlation_id", Value: []byte("corr-" + id)},
			{Key: "reason_poisoned", Value: []byte(reason)},
			{Key: "topic_poisoned", Value: []byte("events.raw.v1")},
			{Key: "handler_poisoned", Value: []byte(handler)},
			{Key: "subscriber_poisoned", Value: []byte("kafka.Subscriber")},
		}}
	require.NoError(t, cl.ProduceSync(t.Context(), r).FirstErr())
}

// TestDLQ: `dlq list` and `dlq replay` on the poison queue of
// KAFKA_BOOTSTRAP_SERVERS, their flags choosing what is replayed.
func TestDLQ(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events.dlq.v1", "events.raw.v1"))
	require.NoError(t, err)
	defer c.Close()
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", c.ListenAddrs()[0])
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	poison(t, cl, "id-1", "persist", `ERROR: value too long (SQLSTATE 22001)`)
	poison(t, cl, "id-2", "detect", "history wait timed out")
	poison(t, cl, "id-3", "persist", "cust_poison is refused by a bug")

	dlq := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := heartbeat(t, append([]string{"dlq"}, args...)...)
		require.Zero(t, code, stderr)
		require.Empty(t, stderr)
		return stdout
	}
	out := dlq("list")
	require.Contains(t, out, "3 poisoned messages in events.dlq.v1")
	require.Contains(t, out, "value too long")

	out = dlq("replay", "-handler", "persist", "-reason-contains", "SQLSTATE", "-dry-run")
	require.Contains(t, out, "id-1")
	require.NotContains(t, out, "id-3")
	require.Contains(t, out, "dry run: would replay 1, would skip 2")

	out = dlq("replay", "-partition", "0", "-offset", "2", "-json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	var replayed map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &replayed))
	require.Equal(t, "id-3", replayed["message_id"])
	require.JSONEq(t, `{"replayed": 1, "skipped": 2, "duplicates": 0, "dry_run": false}`, lines[1])
	require.Equal(t, []string{"id-3"}, rawIDs(t, c.ListenAddrs(), 1))

	require.Equal(t, "replayed 0, skipped 0 (filter: all)\n", dlq("replay"), "the progress is committed")
	out = dlq("replay", "-from-start", "-id", "id-2", "-since", "1h")
	require.Contains(t, out, "replayed 1, skipped 2 (filter: since=1h0m0s id=id-2)")
	require.Equal(t, []string{"id-3", "id-2"}, rawIDs(t, c.ListenAddrs(), 2))
}

// rawIDs reads n messages of events.raw.v1 and returns their message ids.
func rawIDs(t *testing.T, brokers []string, n int) []string {
	t.Helper()
	cons, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics("events.raw.v1"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cons.Close()
	var ids []string
	deadline := time.Now().Add(20 * time.Second)
	for len(ids) < n && time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(t.Context(), deadline)
		cons.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == "_watermill_message_uuid" {
					ids = append(ids, string(h.Value))
				}
			}
		})
		cancel()
	}
	require.Len(t, ids, n)
	return ids
}

// TestReplay: `heartbeat replay FILE -shift-to-now` (a flag after the file)
// publishes every reading of the recording to the raw topic of
// KAFKA_BOOTSTRAP_SERVERS, creating the topics.
func TestReplay(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", c.ListenAddrs()[0])
	t.Setenv("LOG_LEVEL", "warn")
	code, stdout, stderr := heartbeat(t, "replay", empatica, "-shift-to-now")
	require.Zero(t, code, stderr)
	require.Empty(t, stderr, "no warning once shifted")
	require.Contains(t, stdout, "replayed 3651 readings of 1 customer(s) from "+empatica)
	require.Contains(t, stdout, "to events.raw.v1 on "+c.ListenAddrs()[0])

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("events.raw.v1"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	deadline := time.Now().Add(20 * time.Second)
	n := 0
	for n < 3651 && time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(t.Context(), deadline)
		n += len(cl.PollFetches(ctx).Records())
		cancel()
	}
	require.Equal(t, 3651, n)

	// A file that cannot be read fails before Kafka is reached.
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", closedPort(t))
	code, _, stderr = heartbeat(t, "replay", "missing.csv")
	require.Equal(t, 1, code)
	requireOneLine(t, stderr, "replay: open missing.csv: no such file")
}
