package handlers_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/handlers"
	"github.com/heartbeat/heartbeat/messages"
)

type recordLog struct {
	seen   []int64
	failAt int64
	ids    []string
}

func (l *recordLog) Handle(msg *message.Message) error {
	src, _ := messages.SourceFromContext(msg.Context())
	l.seen = append(l.seen, src.Offset)
	return nil
}

func (l *recordLog) HandleRecord(_ context.Context, r *messages.Record, newID func() string) error {
	if r.Source.Offset == l.failAt {
		l.failAt = -1
		return errors.New("boom")
	}
	l.seen = append(l.seen, r.Source.Offset)
	id := r.Header(messages.CorrelationIDMetadata)
	if id == "" {
		id = newID()
	}
	l.ids = append(l.ids, id)
	return nil
}

// EachRecord hands a batch's records over in order, counts each done as it
// succeeds, and resumes after the done ones when the batch is tried again.
func TestEachRecordResumesAfterTheRecordsDone(t *testing.T) {
	b := &messages.Batch{}
	for o := range int64(4) {
		r := messages.Record{Source: messages.Source{Topic: "raw", Partition: 2, Offset: o}, Value: []byte("{}")}
		if o != 3 {
			r.Headers = []messages.Header{{Key: messages.CorrelationIDMetadata, Value: []byte{'c', byte('0' + o)}}}
		}
		b.Records = append(b.Records, r)
	}
	msg := message.NewMessage("batch", nil)
	msg.SetContext(messages.WithBatch(context.Background(), b))
	l := &recordLog{failAt: 2}
	h := handlers.EachRecord(l, func() string { return "new" })

	require.EqualError(t, h(msg), "boom")
	require.Equal(t, 2, b.Done)
	require.NoError(t, h(msg))
	require.Equal(t, 4, b.Done)
	require.Equal(t, []int64{0, 1, 2, 3}, l.seen, "each record once, in order")
	require.Equal(t, []string{"c0", "c1", "c2", "new"}, l.ids)

	// A message that is not a batch goes to Handle.
	one := message.NewMessage("one", nil)
	one.SetContext(messages.WithSource(context.Background(), messages.Source{Offset: 9}))
	require.NoError(t, h(one))
	require.Equal(t, int64(9), l.seen[len(l.seen)-1])
}
