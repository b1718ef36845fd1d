package dlq_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/heartbeat/heartbeat/app/dlq"
)

// fixture is a poison queue as the pipeline leaves it: persist and detect
// failures on several DLQ partitions, of several ages.
var fixture = []poisoned{
	{partition: 0, handler: "persist", reason: "persist batch of 1: ERROR: value too long for type character varying(64) (SQLSTATE 22001)",
		id: "0192f7c4-5b1e-4e6f-9a55-000000000001", key: "cust_00001", age: 10 * time.Minute},
	{partition: 0, handler: "detect", reason: "panic occurred: runtime error: index out of range [3] with length 3\ngoroutine 12 [running]:\nmain.detect()",
		id: "0192f7c4-5b1e-4e6f-9a55-000000000002", key: "cust_00002", age: 3 * time.Hour},
	{partition: 3, handler: "persist", reason: "persist: unexpected EOF",
		id: "0192f7c4-5b1e-4e6f-9a55-000000000003", key: "cust_00003", age: 30 * time.Minute},
	{partition: 5, handler: "persist", reason: "persist batch of 1: ERROR: new row violates check constraint (SQLSTATE 23514)",
		id: "0192f7c4-5b1e-4e6f-9a55-000000000004", key: "cust_00004", age: 50 * time.Hour},
	{partition: 5, handler: "detect", reason: "detect: history lookup: context deadline exceeded",
		id: "0192f7c4-5b1e-4e6f-9a55-000000000005", key: "cust_00005", age: 5 * time.Minute},
}

func fixtureIDs(keep func(poisoned) bool) []string {
	var out []string
	for _, p := range fixture {
		if keep(p) {
			out = append(out, p.id)
		}
	}
	return out
}

func TestList_PrintsEveryPoisonedMessageAsATable(t *testing.T) {
	c := newCluster(t)
	offsets := c.produce(t, fixture...)

	var out bytes.Buffer
	require.NoError(t, dlq.List(ctx(t), c.opts(), &out))

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, 1+len(fixture)+1, out.String())
	require.Regexp(t, `^DLQ\s+TOPIC\s+HANDLER\s+AGE\s+CORRELATION ID\s+MESSAGE ID\s+REASON$`, lines[0])
	require.Equal(t, "5 poisoned messages in events.dlq.v1", lines[len(lines)-1])
	reasonCol := strings.Index(lines[0], "REASON")
	for i, p := range fixture {
		line := lines[1+i] // sorted by partition, then offset, as the fixture is
		require.True(t, strings.HasPrefix(line, fmt.Sprintf("%s/%d/%d ", dlqTopic, p.partition, offsets[i])), line)
		for _, want := range []string{rawTopic, " " + p.handler + " ", p.correlationID(), p.id} {
			require.Contains(t, line, want)
		}
		require.Equal(t, strings.Fields(p.reason)[0], strings.Fields(line[reasonCol:])[0], "columns are aligned")
	}
	require.Contains(t, lines[1], " 10m0s ")
	require.Contains(t, lines[2], " 3h0m ")
	require.Contains(t, lines[4], " 2d2h ")
	// A multi-line reason (a panic's stack) is shown on one line.
	require.Contains(t, lines[2], "with length 3 goroutine 12 [running]: main.detect()")
}

func TestList_ShortensLongReasons(t *testing.T) {
	c := newCluster(t)
	long := poisoned{partition: 1, handler: "persist", id: "0192f7c4-5b1e-4e6f-9a55-000000000009", key: "cust_9",
		reason: "persist: " + strings.Repeat("very long reason ", 40)}
	c.produce(t, long)

	var out bytes.Buffer
	require.NoError(t, dlq.List(ctx(t), c.opts(), &out))
	line := strings.Split(out.String(), "\n")[1]
	require.Contains(t, line, "persist: very long reason very")
	require.True(t, strings.HasSuffix(line, "…"), line)
	require.Less(t, len([]rune(line)), 300)

	out.Reset()
	opts := c.opts()
	opts.JSON = true
	require.NoError(t, dlq.List(ctx(t), opts, &out))
	require.Equal(t, long.reason, jsonLines(t, out.String())[0]["reason"], "JSON keeps the whole reason")
}

func TestList_JSONPrintsOneObjectPerMessage(t *testing.T) {
	c := newCluster(t)
	offsets := c.produce(t, fixture...)
	opts := c.opts()
	opts.JSON = true

	var out bytes.Buffer
	require.NoError(t, dlq.List(ctx(t), opts, &out))

	lines := jsonLines(t, out.String())
	require.Len(t, lines, len(fixture))
	byID := map[string]map[string]any{}
	for _, l := range lines {
		byID[l["message_id"].(string)] = l
	}
	for i, p := range fixture {
		l := byID[p.id]
		require.NotNil(t, l, p.id)
		require.Equal(t, dlqTopic, l["dlq_topic"])
		require.EqualValues(t, p.partition, l["partition"])
		require.EqualValues(t, offsets[i], l["offset"])
		require.Equal(t, rawTopic, l["topic"])
		require.Equal(t, p.handler, l["handler"])
		require.Equal(t, p.reason, l["reason"])
		require.Equal(t, p.correlationID(), l["correlation_id"])
		require.Equal(t, p.key, l["key"])
		require.EqualValues(t, p.age.Seconds(), l["age_seconds"])
		require.Equal(t, now.Add(-p.age).Format(time.RFC3339), l["timestamp"])
	}
}

func TestList_EmptyQueue(t *testing.T) {
	c := newCluster(t)
	var out bytes.Buffer
	require.NoError(t, dlq.List(ctx(t), c.opts(), &out))
	require.Equal(t, "no poisoned messages in events.dlq.v1\n", out.String())
}

func TestList_MissingTopicIsAnError(t *testing.T) {
	c := newCluster(t)
	opts := c.opts()
	opts.Topic = "events.nope.v1"
	err := dlq.List(ctx(t), opts, &bytes.Buffer{})
	require.ErrorContains(t, err, "events.nope.v1")
}

func TestReplay_DryRunPublishesAndCommitsNothing(t *testing.T) {
	c := newCluster(t)
	c.produce(t, fixture...)
	opts := c.opts()
	opts.DryRun = true

	res, out := replay(t, c, opts, dlq.Filter{Handler: "persist"})

	require.Equal(t, dlq.Result{Replayed: 3, Skipped: 2, DryRun: true}, res)
	for _, id := range fixtureIDs(func(p poisoned) bool { return p.handler == "persist" }) {
		require.Contains(t, out, id)
	}
	for _, id := range fixtureIDs(func(p poisoned) bool { return p.handler == "detect" }) {
		require.NotContains(t, out, id)
	}
	require.Contains(t, out, "dry run: would replay 3, would skip 2 (filter: handler=persist); nothing published or committed")
	require.Empty(t, c.records(t, rawTopic))
	require.Empty(t, c.committed(t))

	// A dry run changes nothing: the real run replays the same.
	opts.DryRun = false
	res, _ = replay(t, c, opts, dlq.Filter{Handler: "persist"})
	require.Equal(t, 3, res.Replayed)
}

func TestReplay_RepublishesTheSelectedMessagesAsTheyWere(t *testing.T) {
	c := newCluster(t)
	offsets := c.produce(t, fixture...)

	res, out := replay(t, c, c.opts(), dlq.Filter{Handler: "persist"})

	require.Equal(t, dlq.Result{Replayed: 3, Skipped: 2}, res)
	require.Contains(t, out, "replayed 3, skipped 2 (filter: handler=persist); skipped messages are passed: replay them later with --from-start")
	raw := c.records(t, rawTopic)
	wantIDs := fixtureIDs(func(p poisoned) bool { return p.handler == "persist" })
	require.ElementsMatch(t, wantIDs, ids(raw))
	partitioner := sarama.NewMurmur2Partitioner(rawTopic)
	for _, r := range raw {
		id, _ := header(r, "_watermill_message_uuid")
		i := slices.IndexFunc(fixture, func(p poisoned) bool { return p.id == id })
		p := fixture[i]
		require.Equal(t, p.payload(), string(r.Value))
		require.Equal(t, p.key, string(r.Key))
		corr, _ := header(r, "correlation_id")
		require.Equal(t, p.correlationID(), corr)
		pk, _ := header(r, "partition_key")
		require.Equal(t, p.key, pk, "other metadata is kept")
		for _, h := range []string{"reason_poisoned", "topic_poisoned", "handler_poisoned", "subscriber_poisoned"} {
			_, ok := header(r, h)
			require.False(t, ok, "header %s must be removed", h)
		}
		from, _ := header(r, "replayed_from")
		require.Equal(t, fmt.Sprintf("events.dlq.v1/%d/%d", p.partition, offsets[i]), from)
		// On the customer's partition, as the pipeline's publisher would put it.
		want, err := partitioner.Partition(&sarama.ProducerMessage{Topic: rawTopic, Key: sarama.StringEncoder(p.key)}, 24)
		require.NoError(t, err)
		require.Equal(t, want, r.Partition, "customer %s", p.key)
	}
	// Every DLQ partition is committed up to its end.
	require.Equal(t, map[int32]int64{0: 2, 1: 0, 2: 0, 3: 1, 4: 0, 5: 2}, c.committed(t))
}

func TestReplay_IsSafeToRunTwice(t *testing.T) {
	c := newCluster(t)
	c.produce(t, fixture...)
	f := dlq.Filter{Handler: "persist"}

	res, _ := replay(t, c, c.opts(), f)
	require.Equal(t, 3, res.Replayed)

	res, out := replay(t, c, c.opts(), f)
	require.Equal(t, dlq.Result{}, res, out)
	require.Len(t, c.records(t, rawTopic), 3)

	// New poison arriving later is replayed by the next run, and only it.
	late := poisoned{partition: 3, handler: "persist", reason: "persist: boom", id: "0192f7c4-5b1e-4e6f-9a55-000000000006", key: "cust_6"}
	c.produce(t, late)
	res, _ = replay(t, c, c.opts(), f)
	require.Equal(t, dlq.Result{Replayed: 1}, res)
	require.Len(t, c.records(t, rawTopic), 4)
}

func TestReplay_SkippedMessagesNeedFromStart(t *testing.T) {
	c := newCluster(t)
	c.produce(t, fixture...)
	res, _ := replay(t, c, c.opts(), dlq.Filter{Handler: "persist"})
	require.Equal(t, 3, res.Replayed)

	res, _ = replay(t, c, c.opts(), dlq.Filter{Handler: "detect"})
	require.Equal(t, dlq.Result{}, res, "detect's messages were passed by the first replay")

	opts := c.opts()
	opts.FromStart = true
	res, _ = replay(t, c, opts, dlq.Filter{Handler: "detect"})
	require.Equal(t, dlq.Result{Replayed: 2, Skipped: 3}, res)
	require.ElementsMatch(t, fixtureIDs(func(poisoned) bool { return true }), ids(c.records(t, rawTopic)))

	res, _ = replay(t, c, opts, dlq.Filter{Handler: "persist"})
	require.Equal(t, 3, res.Replayed, "--from-start replays again")
	require.Len(t, c.records(t, rawTopic), 8)
}

func TestReplay_Filters(t *testing.T) {
	p0, p5 := int32(0), int32(5)
	off1 := int64(1)
	cases := []struct {
		name   string
		filter dlq.Filter
		want   func(poisoned) bool
	}{
		{"all", dlq.Filter{}, func(poisoned) bool { return true }},
		{"reason contains", dlq.Filter{ReasonContains: "SQLSTATE"}, func(p poisoned) bool { return strings.Contains(p.reason, "SQLSTATE") }},
		{"reason is case-sensitive", dlq.Filter{ReasonContains: "sqlstate"}, func(poisoned) bool { return false }},
		{"id", dlq.Filter{ID: fixture[2].id}, func(p poisoned) bool { return p.id == fixture[2].id }},
		{"since", dlq.Filter{Since: time.Hour}, func(p poisoned) bool { return p.age <= time.Hour }},
		{"partition", dlq.Filter{Partition: &p5}, func(p poisoned) bool { return p.partition == 5 }},
		{"partition and offset", dlq.Filter{Partition: &p0, Offset: &off1}, func(p poisoned) bool { return p.id == fixture[1].id }},
		{"all conditions must match", dlq.Filter{Handler: "persist", Since: time.Hour, ReasonContains: "SQLSTATE"},
			func(p poisoned) bool { return p.id == fixture[0].id }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			c.produce(t, fixture...)
			want := fixtureIDs(tc.want)

			res, _ := replay(t, c, c.opts(), tc.filter)

			require.Equal(t, dlq.Result{Replayed: len(want), Skipped: len(fixture) - len(want)}, res)
			require.ElementsMatch(t, want, ids(c.records(t, rawTopic)))
		})
	}
}

func TestReplay_OneMessagePoisonedByTwoHandlersIsReplayedOnce(t *testing.T) {
	c := newCluster(t)
	both := []poisoned{
		{partition: 1, handler: "persist", reason: "persist: boom", id: "0192f7c4-5b1e-4e6f-9a55-000000000007", key: "cust_7"},
		{partition: 4, handler: "detect", reason: "detect: boom", id: "0192f7c4-5b1e-4e6f-9a55-000000000007", key: "cust_7"},
	}
	c.produce(t, both...)

	res, _ := replay(t, c, c.opts(), dlq.Filter{})

	require.Equal(t, dlq.Result{Replayed: 1, Duplicates: 1}, res)
	require.Len(t, c.records(t, rawTopic), 1, "both handlers consume the one replayed message")
}

func TestReplay_MessagesWithoutAnOriginalTopicAreReported(t *testing.T) {
	c := newCluster(t)
	offsets := c.produce(t,
		poisoned{partition: 2, handler: "persist", reason: "boom", id: "0192f7c4-5b1e-4e6f-9a55-000000000008", key: "cust_8", topic: "-"},
		poisoned{partition: 2, handler: "persist", reason: "boom", id: "0192f7c4-5b1e-4e6f-9a55-000000000009", key: "cust_9"},
	)

	res, out := replay(t, c, c.opts(), dlq.Filter{})

	require.Equal(t, dlq.Result{Replayed: 1, Unroutable: []string{fmt.Sprintf("events.dlq.v1/2/%d", offsets[0])}}, res)
	require.Contains(t, out, "1 without an original topic (events.dlq.v1/2/0)")
	require.Len(t, c.records(t, rawTopic), 1)
}

func TestReplay_CommitsOnlyUpToTheFirstFailure(t *testing.T) {
	c := newCluster(t)
	c.produce(t,
		poisoned{partition: 0, handler: "persist", reason: "boom", id: "0192f7c4-5b1e-4e6f-9a55-000000000010", key: "cust_10"},
		poisoned{partition: 0, handler: "persist", reason: "boom", id: "0192f7c4-5b1e-4e6f-9a55-000000000011", key: "cust_11",
			topic: "events.gone.v1"},
		poisoned{partition: 3, handler: "persist", reason: "boom", id: "0192f7c4-5b1e-4e6f-9a55-000000000012", key: "cust_12"},
	)

	var out bytes.Buffer
	res, err := dlq.Replay(ctx(t), c.opts(), dlq.Filter{}, &out)

	require.ErrorContains(t, err, "replay events.dlq.v1/0/1 to events.gone.v1")
	require.GreaterOrEqual(t, res.Replayed, 1)
	require.Equal(t, int64(1), c.committed(t)[0], "the failed record is offered again by the next replay")
	require.Contains(t, ids(c.records(t, rawTopic)), "0192f7c4-5b1e-4e6f-9a55-000000000010")
}

func TestListAndReplay_StartAtTheLogStart(t *testing.T) {
	// Records deleted by retention are not waited for.
	c := newCluster(t)
	c.produce(t, fixture...)
	deleted := kadm.Offsets{}
	deleted.Add(kadm.Offset{Topic: dlqTopic, Partition: 0, At: 1})
	resp, err := c.adm.DeleteRecords(ctx(t), deleted)
	require.NoError(t, err)
	require.NoError(t, resp.Error())

	var out bytes.Buffer
	require.NoError(t, dlq.List(ctx(t), c.opts(), &out))
	require.NotContains(t, out.String(), fixture[0].id)
	require.Contains(t, out.String(), "4 poisoned messages")

	res, _ := replay(t, c, c.opts(), dlq.Filter{})
	require.Equal(t, dlq.Result{Replayed: 4}, res)
}
