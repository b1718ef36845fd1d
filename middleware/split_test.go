package middleware_test

import (
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/middleware"
)

// TestSplitBatches: only a batch message failing for a reason of its own is
// split (nacked, its records redelivered one by one); an outage is waited
// out whole, and a single message is retried and poisoned as it is.
func TestSplitBatches(t *testing.T) {
	bad := errors.New("value too long for type character varying(64)")
	outage := middleware.MarkTransient(errors.New("connection refused"))
	already := &middleware.SplitError{Err: bad}
	batch := func() *message.Message {
		return batchMessage(&messages.Batch{Records: []messages.Record{{Value: []byte("a")}, {Value: []byte("b")}}})
	}
	single := func() *message.Message { return message.NewMessage(uuid.NewString(), []byte("a")) }
	asBatch := func() *message.Message { m := single(); messages.AsBatch(m); return m }
	cases := []struct {
		name  string
		msg   func() *message.Message
		err   error
		split bool
	}{
		{"batch, its own failure", batch, bad, true},
		{"batch, transient", batch, outage, false},
		{"batch, already split", batch, already, false},
		{"batch, success", batch, nil, false},
		{"single message, its own failure", single, bad, false},
		{"single message seen as a batch of one", asBatch, bad, false},
		{"single message, transient", single, outage, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			produced := []*message.Message{message.NewMessage("out", nil)}
			out, err := middleware.SplitBatches(func(*message.Message) ([]*message.Message, error) { return produced, c.err })(c.msg())
			if !c.split {
				require.Equal(t, c.err, err, "passed on as it is")
				require.Equal(t, produced, out)
				return
			}
			var split *middleware.SplitError
			require.ErrorAs(t, err, &split)
			require.True(t, middleware.IsSplit(err))
			require.ErrorIs(t, err, bad, "the cause stays in the chain")
			require.Equal(t, "batch split into its records: "+bad.Error(), err.Error())
			require.False(t, middleware.IsTransient(err))
			require.Nil(t, out, "a batch being split produces nothing")
		})
	}
	require.False(t, middleware.IsSplit(bad))
	require.False(t, middleware.IsSplit(nil))
}
