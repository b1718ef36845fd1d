package handlers_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/handlers"
	"github.com/heartbeat/heartbeat/handlers/handlerstest"
	"github.com/heartbeat/heartbeat/messages"
)

// persistNow is the clock of the Persist under test: validation's "now".
var persistNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func newPersist(t *testing.T, sink handlers.IngestSink) *handlers.Persist {
	t.Helper()
	p, err := handlers.NewPersist(messages.DefaultLimits(), sink, func() time.Time { return persistNow })
	require.NoError(t, err)
	return p
}

// valid is a reading of customer at persistNow-ago, as a raw record of
// partition 3 at offset.
func valid(customer string, rate int, ago time.Duration, offset int64) (messages.Record, messages.Heartbeat) {
	h := messages.Heartbeat{EventID: uuid.NewString(), CustomerID: customer, Timestamp: persistNow.Add(-ago), HeartRate: rate}
	b, err := h.Marshal()
	if err != nil {
		panic(err)
	}
	return messages.Record{Source: messages.Source{Topic: "events.raw.v1", Partition: 3, Offset: offset}, Key: []byte(customer), Value: b}, h
}

// refused is a record of partition 3 at offset that validation refuses.
func refused(payload string, offset int64) messages.Record {
	return messages.Record{Source: messages.Source{Topic: "events.raw.v1", Partition: 3, Offset: offset}, Value: []byte(payload)}
}

func TestPersistSubmitsEveryValidReadingWithItsSource(t *testing.T) {
	sink := &handlerstest.Events{}
	r1, h1 := valid("c1", 72, time.Minute, 10)
	r2, h2 := valid("c2", 65, time.Second, 11)
	r3, h3 := valid("c1", 73, 0, 12)
	b := &messages.Batch{Records: []messages.Record{r1, r2, r3}}

	require.NoError(t, newPersist(t, sink).HandleBatch(context.Background(), b))

	calls, rows := sink.Snapshot()
	require.Equal(t, 1, calls, "a batch's records go to storage in one submission")
	require.Len(t, rows, 3)
	for i, want := range []messages.Heartbeat{h1, h2, h3} {
		require.False(t, rows[i].Refused)
		require.Equal(t, want.EventID, rows[i].Reading.EventID)
		require.Equal(t, want.CustomerID, rows[i].Reading.CustomerID)
		require.Equal(t, want.HeartRate, rows[i].Reading.HeartRate)
		require.True(t, want.Timestamp.Equal(rows[i].Reading.Timestamp))
		require.Equal(t, b.Records[i].Source, rows[i].Source, "record %d keeps where it was read from", i)
	}
	require.Equal(t, 3, b.Done)
	require.Empty(t, b.Refused)
}

// An invalid record is submitted as its place in the checkpoint only, and
// listed in the batch with its validation error for the InvalidEvents
// middleware; validation runs at the handler's clock.
func TestPersistRefusesInvalidRecords(t *testing.T) {
	sink := &handlerstest.Events{}
	ok1, h1 := valid("c1", 72, time.Minute, 20)
	ok2, h2 := valid("c1", 74, 0, 24)
	future := fmt.Sprintf(`{"event_id":%q,"customer_id":"c1","timestamp":%q,"heart_rate":70}`,
		uuid.NewString(), persistNow.Add(time.Hour).Format(time.RFC3339))
	b := &messages.Batch{Records: []messages.Record{
		ok1,
		refused(`not json`, 21),
		refused(fmt.Sprintf(`{"event_id":%q,"customer_id":"c1","timestamp":%q,"heart_rate":250}`, uuid.NewString(), persistNow.Format(time.RFC3339)), 22),
		refused(future, 23),
		ok2,
	}}

	require.NoError(t, newPersist(t, sink).HandleBatch(context.Background(), b))

	_, rows := sink.Snapshot()
	require.Len(t, rows, 5, "every record, valid or not, has its place in the checkpoint")
	for i, r := range rows {
		require.Equal(t, b.Records[i].Source, r.Source)
		require.Equal(t, i >= 1 && i <= 3, r.Refused, "record %d", i)
	}
	require.Equal(t, h1.EventID, rows[0].Reading.EventID)
	require.Equal(t, h2.EventID, rows[4].Reading.EventID)

	require.Equal(t, 5, b.Done)
	require.Zero(t, b.Routed, "routing is the middleware's")
	want := []struct {
		record int
		class  messages.Class
		field  string
	}{
		{1, messages.ClassSchema, "payload"},
		{2, messages.ClassDomain, "heart_rate"},
		{3, messages.ClassDomain, "timestamp"},
	}
	require.Len(t, b.Refused, len(want))
	for i, w := range want {
		got := b.Refused[i]
		require.Equal(t, w.record, got.Record)
		require.Equal(t, w.class, got.Err.Class, "record %d", w.record)
		require.Equal(t, w.field, got.Err.Field, "record %d", w.record)
		require.NotEmpty(t, got.Err.Reason)
	}
	require.Contains(t, b.Refused[1].Err.Reason, "250")
	require.Contains(t, b.Refused[2].Err.Reason, "in the future")
}

// A batch resumed from Done (a retry after some records were done) submits
// only the records from there, and numbers its refusals in the whole batch.
func TestPersistResumesFromDone(t *testing.T) {
	sink := &handlerstest.Events{}
	r0, _ := valid("c1", 70, 3*time.Second, 0)
	r1, _ := valid("c1", 71, 2*time.Second, 1)
	r3, h3 := valid("c1", 72, 0, 3)
	b := &messages.Batch{Records: []messages.Record{r0, r1, refused(`{}`, 2), r3}, Done: 2}

	require.NoError(t, newPersist(t, sink).HandleBatch(context.Background(), b))

	_, rows := sink.Snapshot()
	require.Len(t, rows, 2)
	require.True(t, rows[0].Refused)
	require.Equal(t, int64(2), rows[0].Source.Offset)
	require.Equal(t, h3.EventID, rows[1].Reading.EventID)
	require.Len(t, b.Refused, 1)
	require.Equal(t, 2, b.Refused[0].Record)
	require.Equal(t, 4, b.Done)
}

// A message of another pub/sub (GoChannel) is a batch of one record from no
// Kafka partition: refused, it has no place in a checkpoint and nothing is
// submitted; valid, it is stored as any reading.
func TestPersistMessageFromNoPartition(t *testing.T) {
	t.Run("refused: not submitted", func(t *testing.T) {
		sink := &handlerstest.Events{}
		msg := message.NewMessage(uuid.NewString(), []byte(`not json`))
		require.NoError(t, handlers.Handler(newPersist(t, sink))(msg))
		calls, _ := sink.Snapshot()
		require.Zero(t, calls)
		b := messages.AsBatch(msg)
		require.Equal(t, 1, b.Done)
		require.Len(t, b.Refused, 1, "still refused: its envelope is routed")
		require.Equal(t, 0, b.Refused[0].Record)
		require.Equal(t, messages.ClassSchema, b.Refused[0].Err.Class)
	})
	t.Run("valid: stored", func(t *testing.T) {
		sink := &handlerstest.Events{}
		r, h := valid("c1", 72, 0, 0)
		msg := message.NewMessage(uuid.NewString(), r.Value)
		require.NoError(t, handlers.Handler(newPersist(t, sink))(msg))
		_, rows := sink.Snapshot()
		require.Len(t, rows, 1)
		require.Equal(t, h.EventID, rows[0].Reading.EventID)
		require.Equal(t, int64(-1), rows[0].Source.Offset)
		require.Equal(t, int32(-1), rows[0].Source.Partition)
	})
}

// A failed submission acks nothing: Done stays where it was and so do the
// refusals the InvalidEvents middleware has yet to route, so that the
// retry submits the same records again.
func TestPersistSinkFailureLeavesTheBatchAsItWas(t *testing.T) {
	down := errors.New("connection refused")
	sink := &handlerstest.Events{Fail: func(call int) error {
		if call == 1 {
			return down
		}
		return nil
	}}
	p := newPersist(t, sink)
	r0, _ := valid("c1", 70, time.Second, 0)
	r2, _ := valid("c1", 71, 0, 2)
	earlier := []messages.Refusal{{Record: 1, Err: &messages.ValidationError{Class: messages.ClassSchema, Field: "payload", Reason: "not JSON"}}}
	b := &messages.Batch{Records: []messages.Record{r0, refused(`not json`, 1), r2}, Refused: earlier}

	err := p.HandleBatch(context.Background(), b)
	require.ErrorIs(t, err, down)
	require.Zero(t, b.Done)
	require.Equal(t, earlier, b.Refused)
	require.Zero(t, b.Routed)
	_, rows := sink.Snapshot()
	require.Empty(t, rows)

	require.NoError(t, p.HandleBatch(context.Background(), b), "the retry")
	calls, rows := sink.Snapshot()
	require.Equal(t, 2, calls)
	require.Len(t, rows, 3)
	require.Equal(t, 3, b.Done)
	require.Len(t, b.Refused, 1)
	require.Equal(t, 1, b.Refused[0].Record)
}

// Once every record is done, a retry of the message (its envelopes failed
// to publish after a split, say) submits nothing again.
func TestPersistRetryAfterDoneIsANoOp(t *testing.T) {
	sink := &handlerstest.Events{}
	p := newPersist(t, sink)
	r, _ := valid("c1", 70, 0, 0)
	b := &messages.Batch{Records: []messages.Record{r, refused(`[]`, 1)}}
	require.NoError(t, p.HandleBatch(context.Background(), b))
	refusals, routed := b.Refused, 1
	b.Routed = routed

	require.NoError(t, p.HandleBatch(context.Background(), b))
	calls, rows := sink.Snapshot()
	require.Equal(t, 1, calls)
	require.Len(t, rows, 2)
	require.Equal(t, 2, b.Done)
	require.Equal(t, refusals, b.Refused)
	require.Equal(t, routed, b.Routed, "the refusals routed stay routed")
}

func TestNewPersistRefusesMissingDependencies(t *testing.T) {
	now := func() time.Time { return persistNow }
	cases := []struct {
		name string
		sink handlers.IngestSink
		now  func() time.Time
		want string
	}{
		{"no sink", nil, now, "handlers: Persist needs a sink"},
		{"no clock", &handlerstest.Events{}, nil, "handlers: Persist needs a clock"},
		{"neither", nil, nil, "handlers: Persist needs a sink, a clock"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := handlers.NewPersist(messages.DefaultLimits(), c.sink, c.now)
			require.EqualError(t, err, c.want)
			require.Nil(t, p)
		})
	}
}
