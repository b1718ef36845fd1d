package middleware_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/middleware"
)

func TestCorrelationID(t *testing.T) {
	withID := func() *message.Message {
		m := message.NewMessage(uuid.NewString(), []byte("x"))
		wmmw.SetCorrelationID("from-producer", m)
		return m
	}
	cases := []struct {
		name string
		msg  *message.Message
		want string // the id the handler sees
		made int    // ids made
	}{
		{"a message without one gets a new one", message.NewMessage(uuid.NewString(), []byte("x")), "new-1", 1},
		{"a message with one keeps it", withID(), "from-producer", 0},
		{"a batch message is left to its records", batchMessage(&messages.Batch{Records: []messages.Record{{Value: []byte("x")}}}), "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			made := 0
			var seen string
			_, err := middleware.CorrelationID(func() string { made++; return "new-1" })(func(msg *message.Message) ([]*message.Message, error) {
				seen = wmmw.MessageCorrelationID(msg)
				return nil, nil
			})(c.msg)
			require.NoError(t, err)
			require.Equal(t, c.want, seen)
			require.Equal(t, c.made, made)
		})
	}
}
